"""The safety net of webhook delivery: enqueue every pending delivery that is due and unheld.

Every committed delivery already has its task; this catches the ones whose worker died while
sending (their task stays marked running). ``make worker`` and the Procfile run it when a
worker starts; ``--every`` keeps it running beside the workers (or run it from a scheduler).
"""

import time

from django.core.management.base import BaseCommand

from webhooks import services


class Command(BaseCommand):
    help = "Enqueue a delivery task for each pending webhook delivery that is due and held by no worker."

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            type=float,
            default=0,
            help="Only deliveries due for at least this many seconds (default 0: all that are due).",
        )
        parser.add_argument(
            "--every",
            type=float,
            default=0,
            help="Run again every this many seconds, until stopped (default 0: once).",
        )

    def handle(self, *args, grace, every, **options):
        while True:
            count = services.enqueue_due(grace_seconds=grace)
            self.stdout.write(f"Enqueued {count} pending webhook delivery(ies).")
            if every <= 0:
                return
            time.sleep(every)
