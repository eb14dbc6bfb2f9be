"""Record the expiry of reservations past their time limit: store ``expired``, log it and send
``reservation.expired`` (and the stock alerts it crosses). The worker's sweep does this every
``--sweep-every`` seconds; this command is for cron or a one-off run. Nothing depends on it
running: the API shows an expired reservation as expired, holding nothing, from its
``expires_at`` on."""

from django.core.management.base import BaseCommand, CommandError

from widgets import services


class Command(BaseCommand):
    help = "Record expired reservations (status, change log, reservation.expired events); prints how many."

    def add_arguments(self, parser):
        parser.add_argument(
            "--limit", type=int, default=None, help="Record at most this many (default: every one that is due)."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=services.EXPIRY_BATCH,
            help=f"Reservations recorded per transaction (default {services.EXPIRY_BATCH}).",
        )

    def handle(self, *args, limit, batch_size, **options):
        if batch_size < 1 or (limit is not None and limit < 0):
            raise CommandError("--batch-size must be at least 1 and --limit not negative.")
        count = services.record_expired_reservations(limit=limit, batch_size=batch_size)
        self.stdout.write(f"Recorded {count} expired reservation(s).")
