"""Delete stored Idempotency-Key responses older than the retention period (default 24 h)."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from widgets import services


class Command(BaseCommand):
    help = "Delete stored Idempotency-Key responses older than --hours (at least 24; default 24)."

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=int, default=24, help="Keep keys younger than this (>= 24).")

    def handle(self, *args, hours, **options):
        try:
            deleted = services.purge_idempotency_keys(older_than=timedelta(hours=hours))
        except ValueError as exc:
            raise CommandError(f"--hours must be at least 24: {exc}") from None
        self.stdout.write(f"Deleted {deleted} idempotency key(s) older than {hours} hours.")
