"""Deliveries per second of one webhook worker against a local receiver (docs/events.md).

    python bench/webhooks.py [--deliveries 2000]

A backlog of pending deliveries is made with the worker stopped, then one worker process
(`manage.py db_worker --batch`, what the Procfile's worker line runs after its start-up sweep)
drains it against a keep-alive receiver on the loopback that answers 200 at once. Two shapes:
single adjustments (a task per delivery) and batches of 10 (a task carries 10 deliveries).
The rate is counted from the first delivery to the last, so the worker's start-up is left out
(the wall time including it is shown too). Every delivery is signed, its URL's addresses are
checked, and its attempt is claimed and recorded in the database, as in production.

The latency a subscription adds to a write is bench/webhook_latency.py. Recreates the
PostgreSQL database BENCH_WEBHOOKS_DATABASE (default widgets_bench_webhooks; dropped after) on
ADMIN_DATABASE_URL.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=2000, help="deliveries per shape")
    args = parser.parse_args()

    admin = os.environ.get("ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = os.environ.get("BENCH_WEBHOOKS_DATABASE", "widgets_bench_webhooks")
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", admin, "-qc", sql], check=True)
    os.environ.update(
        DATABASE_URL=admin.rsplit("/", 1)[0] + f"/{name}",
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_SECRET_KEY="bench",
        DJANGO_WEBHOOKS_ALLOW_PRIVATE_NETWORKS="1",
        DJANGO_LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections
    from webhook_receiver import running_receiver

    from tests.conftest import make_user
    from webhooks.models import Delivery
    from webhooks.services import create_subscription
    from widgets import services

    call_command("migrate", verbosity=0)
    actor = make_user("manager")
    widgets = [services.create_widget(user=actor, name=f"W{i}", stock=10_000_000).pk for i in range(20)]

    def single():
        for i in range(args.deliveries):
            services.adjust_stock(widget_id=widgets[i % 20], delta=-1, reason="sold", user=actor)

    def batches():
        items = [{"widget": w, "delta": -1, "reason": "sold"} for w in widgets[:10]]
        for _ in range(args.deliveries // 10):
            services.adjust_stock_batch(items=items, user=actor)

    print(f"\none worker, {args.deliveries} deliveries per shape, keep-alive receiver on the loopback\n")
    print("| shape | deliveries | tasks | deliveries/s | wall s (with start-up) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    with running_receiver() as receiver:
        receiver.keep_alive = True
        create_subscription(url=receiver.url, event_types=["stock.adjusted"])
        for label, make_backlog, per_task in (("single adjustments", single, 1), ("batches of 10", batches, 10)):
            Delivery.objects.all().delete()
            receiver.requests.clear()
            make_backlog()
            total = Delivery.objects.filter(status="pending").count()
            started = time.perf_counter()
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "db_worker", "--batch", "--no-startup-delay", "--no-reload"],
                cwd=ROOT,
                env=os.environ,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # a line per task (django_tasks logs at INFO)
            )
            assert worker.wait() == 0
            wall = time.perf_counter() - started
            delivered = Delivery.objects.filter(status="delivered").count()
            assert delivered == total == len(receiver.requests), (delivered, total, len(receiver.requests))
            # From the first delivery to the last, as the receiver saw them.
            seconds = receiver.requests[-1]["at"] - receiver.requests[0]["at"]
            rate = (delivered - 1) / seconds
            print(f"| {label} | {delivered} | {total // per_task} | {rate:.0f} | {wall:.1f} |")
    connections.close_all()
    subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
