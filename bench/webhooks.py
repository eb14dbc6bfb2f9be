"""Webhook costs (docs/events.md): adjust and batch latency with and without an active
subscription, and the deliveries per second of one worker against a local receiver.

    python bench/webhooks.py [--adjustments 300] [--deliveries 1000] [--port 8530]

A smoke measurement, not part of bench/run.py: requests go through Django's test client in
this process (the whole middleware and DRF stack, no gunicorn), so compare the two latency
columns with each other, not with bench/RESULTS.md. Recreates the PostgreSQL database
BENCH_WEBHOOKS_DATABASE (default widgets_bench_webhooks; it is dropped) on ADMIN_DATABASE_URL.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adjustments", type=int, default=300, help="adjustments (and batches) per variant")
    parser.add_argument("--deliveries", type=int, default=1000)
    args = parser.parse_args()

    admin = os.environ.get("ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = os.environ.get("BENCH_WEBHOOKS_DATABASE", "widgets_bench_webhooks")
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", admin, "-qc", sql], check=True)
    database_url = admin.rsplit("/", 1)[0] + f"/{name}"
    os.environ.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_SECRET_KEY="bench",
        DJANGO_WEBHOOKS_ALLOW_PRIVATE_NETWORKS="1",
        DJANGO_LOG_LEVEL="WARNING",
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_THROTTLE_USER="100000000/min",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment
    from webhook_receiver import running_receiver

    from tests.conftest import make_user, token_client
    from webhooks.models import Delivery
    from widgets import services

    setup_test_environment()  # the test client's host and settings
    call_command("migrate", verbosity=0)
    clerk = token_client(make_user("clerk"))
    actor = make_user("manager")
    widgets = [services.create_widget(user=actor, name=f"W{i}", stock=1_000_000).pk for i in range(20)]

    def latencies(label):
        adjust, batch = [], []
        for i in range(args.adjustments):
            started = time.perf_counter()
            response = clerk.post(
                f"/api/widgets/{widgets[i % 20]}/adjust/", {"delta": -1, "reason": "sold"}, format="json"
            )
            adjust.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 201, response.content
            items = [{"widget": w, "delta": 1, "reason": "received"} for w in widgets[:10]]
            started = time.perf_counter()
            response = clerk.post("/api/adjustments/", {"items": items}, format="json")
            batch.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 201, response.content
        row = []
        for values in (adjust, batch):
            values.sort()
            row += [statistics.median(values), values[int(len(values) * 0.95)]]
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
        return row

    with running_receiver() as receiver:
        receiver.keep_alive = True
        print(f"\nadjust / batch (10 items) latency, ms, {args.adjustments} of each (in-process test client)\n")
        print("| subscription | adjust p50 | adjust p95 | batch p50 | batch p95 |\n| --- | --- | --- | --- | --- |")
        latencies("none (warm-up)")
        without = latencies("none")
        services_module = __import__("webhooks.services", fromlist=["create_subscription"])
        subscription = services_module.create_subscription(url=receiver.url, event_types=["*"])
        with_sub = latencies('one, `["*"]`')
        print(f"\nadjust p50 with/without: {with_sub[0] / without[0]:.2f}x; batch p50: {with_sub[2] / without[2]:.2f}x")

        # Deliveries per second: the backlog above plus more, drained by one worker.
        pending = Delivery.objects.filter(status="pending").count()
        for i in range(max(0, args.deliveries - pending)):
            services.adjust_stock(widget_id=widgets[i % 20], delta=-1, reason="sold")
        total = Delivery.objects.filter(status="pending", subscription=subscription).count()
        env = {**os.environ}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "manage.py", "run_worker", "--batch", "--verbosity", "0"], cwd=ROOT, env=env, check=True
        )
        seconds = time.perf_counter() - started
        delivered = Delivery.objects.filter(status="delivered", subscription=subscription).count()
        print(
            f"\none worker: {delivered} of {total} deliveries in {seconds:.1f} s = "
            f"{delivered / seconds:.0f} deliveries/s "
            f"(receiver got {len(receiver.requests)} requests; includes the worker's start-up)"
        )
    from django.db import connections

    connections.close_all()
    subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
