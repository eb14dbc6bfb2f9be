"""The worker process: django-tasks-db's ``db_worker``, plus the delivery safety net.

``make worker`` and the Procfile's ``worker:`` line run this on every instance; each task is
claimed by one worker (SELECT ... FOR UPDATE SKIP LOCKED). Before the worker starts, and then
every ``--sweep-every`` seconds in the background, the sweep

- records the reservations that have expired (``manage.py expire_reservations``): their
  ``reservation.expired`` events and the stock alerts the expiry crosses are sent from then on
  (each reservation once, however many workers sweep at the same time);
- enqueues again the deliveries left behind by a worker that died while sending
  (``manage.py deliver_pending``).
"""

import logging
import threading

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connection

from webhooks import services
from widgets.services import record_expired_reservations

logger = logging.getLogger("webhooks.worker")


class Command(BaseCommand):
    help = "Run the background worker (webhook deliveries) with its safety-net sweep."

    def add_arguments(self, parser):
        parser.add_argument("--sweep-every", type=float, default=60, help="Seconds between sweeps (0: only at start).")
        parser.add_argument(
            "--sweep-grace",
            type=float,
            default=300,
            help="The periodic sweep takes deliveries overdue by this many seconds (the start-up sweep: all).",
        )
        parser.add_argument("--interval", type=float, default=1, help="db_worker's poll interval when idle.")
        parser.add_argument("--batch", action="store_true", help="Run the tasks that are ready, then stop.")

    def handle(self, *args, sweep_every, sweep_grace, interval, batch, **options):
        expired = record_expired_reservations()
        count = services.enqueue_due()
        logger.info(
            "worker starting; recorded %s expired reservation(s), enqueued %s pending delivery(ies) left behind",
            expired,
            count,
        )
        if sweep_every > 0 and not batch:
            stop = threading.Event()
            threading.Thread(target=self.sweep, args=(stop, sweep_every, sweep_grace), daemon=True).start()
        call_command(
            "db_worker",
            interval=interval,
            batch=batch,
            reload=False,
            startup_delay=not batch,
            verbosity=options["verbosity"],
        )

    @staticmethod
    def sweep(stop, every, grace):
        while not stop.wait(every):
            try:
                close_old_connections()
                expired = record_expired_reservations()
                if expired:
                    logger.info("sweep recorded %s expired reservation(s)", expired)
            except Exception:  # the deliveries below are swept all the same
                logger.exception("reservation expiry sweep failed")
            try:
                close_old_connections()
                count = services.enqueue_due(grace_seconds=grace)
                if count:
                    logger.warning("sweep enqueued %s overdue webhook delivery(ies)", count)
            except Exception:  # the next sweep tries again; the worker itself carries on
                logger.exception("webhook delivery sweep failed")
            finally:
                connection.close()
