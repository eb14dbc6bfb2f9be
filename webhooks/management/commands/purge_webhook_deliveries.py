"""Delete finished webhook deliveries older than the retention (DJANGO_WEBHOOK_RETENTION_DAYS),
the events they leave behind, and the finished delivery tasks as old. Run it daily."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webhooks import services


class Command(BaseCommand):
    help = "Delete delivered or failed webhook deliveries (and their events and tasks) older than --days."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=float,
            default=None,
            help=f"Keep younger ones (default: the configured {settings.WEBHOOK_RETENTION / 86400:g} days).",
        )

    def handle(self, *args, days, **options):
        if days is not None and days < 0:
            raise CommandError("--days must not be negative.")
        deleted = services.purge(older_than=None if days is None else timedelta(days=days))
        self.stdout.write(
            f"Deleted {deleted['deliveries']} delivery(ies), {deleted['events']} event(s) "
            f"and {deleted['tasks']} finished task(s)."
        )
