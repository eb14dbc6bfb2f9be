"""Issue 13's bar: adjust and batch latency with a webhook subscription active, against today.

    python bench/webhook_latency.py --reference-tree /tmp/ccaf318 [--rounds 8] [--per-round 100]

"Today" is the code before events existed (ccaf318: `git worktree add /tmp/ccaf318 ccaf318`,
and link this tree's .venv into it). Three variants, each in its own process and its own
PostgreSQL database, measured in interleaved rounds so that a busy moment on the shared
machine falls on all of them alike:

- the reference tree, no subscriptions (today);
- this tree, no subscriptions;
- this tree, one active subscription to every event type (`["*"]`): every adjustment records
  its events, deliveries and delivery tasks in its transaction. No worker runs, so the
  deliveries stay queued: this measures what a write pays, not what delivering costs
  (bench/webhooks.py reports a worker's deliveries per second).

Requests go through Django's test client in each process (the whole middleware and DRF stack,
token authentication, no gunicorn), each variant with its own Redis database (flushed), as in
production: without Redis this tree does not cache tokens, so that revocation stays immediate.
Each round is `--per-round` adjustments (one widget, -1) and as many batches (10 widgets, +1).
Databases `<prefix>_ref`, `<prefix>_none`, `<prefix>_sub` (BENCH_WEBHOOK_LATENCY_PREFIX,
default widgets_bench_hooklat) are recreated on ADMIN_DATABASE_URL and dropped afterwards;
Redis databases 4, 5, 6 (and 7) of BENCH_REDIS (default redis://127.0.0.1:6379) are flushed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDGETS = 20


def short_commit(tree: Path) -> str:
    found = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or "?"


def child(tree: Path, subscribe: bool) -> int:
    """One variant: set up, then answer `run N` lines on stdin with the latencies as JSON."""
    sys.path[:0] = [str(tree), str(tree / "tests")]
    os.chdir(tree)
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    from tests.conftest import make_user, token_client
    from widgets import services

    setup_test_environment()  # the test client's host and settings
    call_command("migrate", verbosity=0)
    clerk = token_client(make_user("clerk"))
    actor = make_user("manager")
    widgets = [services.create_widget(user=actor, name=f"W{i}", stock=1_000_000).pk for i in range(WIDGETS)]
    if subscribe:
        from webhooks.services import create_subscription

        # Nothing listens there and no worker runs: deliveries are recorded, not sent.
        create_subscription(url="http://127.0.0.1:9/hooks", event_types=["*"])
    batch_items = [{"widget": w, "delta": 1, "reason": "received"} for w in widgets[:10]]
    print("ready", flush=True)
    done = 0
    for line in sys.stdin:
        count = int(line.split()[1])
        adjust, batch = [], []
        for _ in range(count):
            widget = widgets[done % WIDGETS]
            done += 1
            started = time.perf_counter()
            response = clerk.post(f"/api/widgets/{widget}/adjust/", {"delta": -1, "reason": "sold"}, format="json")
            adjust.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 201, response.content
            started = time.perf_counter()
            response = clerk.post("/api/adjustments/", {"items": batch_items}, format="json")
            batch.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 201, response.content
        print(json.dumps({"adjust": adjust, "batch": batch}), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-tree", type=Path, help="a checkout of the code before events (required)")
    parser.add_argument(
        "--compare-tree", type=Path, help="another checkout of this code: a fourth variant, with one subscription"
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--child", choices=["plain", "subscribed"], help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.tree, subscribe=args.child == "subscribed")
    if not args.reference_tree:
        parser.error("--reference-tree is required")

    admin = os.environ.get("ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    prefix = os.environ.get("BENCH_WEBHOOK_LATENCY_PREFIX", "widgets_bench_hooklat")
    reference = args.reference_tree.resolve()
    today_commit, here = short_commit(reference), short_commit(ROOT)
    redis = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
    variants = [
        (f"today ({today_commit}), no subscription", reference, "plain", f"{prefix}_ref", f"{redis}/4"),
        (f"this tree ({here}), no subscription", ROOT, "plain", f"{prefix}_none", f"{redis}/5"),
        (f'this tree ({here}), one subscription `["*"]`', ROOT, "subscribed", f"{prefix}_sub", f"{redis}/6"),
    ]
    if args.compare_tree:
        tree = args.compare_tree.resolve()
        label = f'{tree.name} ({short_commit(tree)}), one subscription `["*"]`'
        variants.append((label, tree, "subscribed", f"{prefix}_cmp", f"{redis}/7"))
    processes = []
    for _, tree, mode, database, redis_url in variants:
        subprocess.run(["redis-cli", "-u", redis_url, "flushdb"], check=True, capture_output=True)
        for sql in (f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", f"CREATE DATABASE {database}"):
            subprocess.run(["psql", admin, "-qc", sql], check=True)
        env = {
            **os.environ,
            "DATABASE_URL": admin.rsplit("/", 1)[0] + f"/{database}",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_SECRET_KEY": "bench",
            "DJANGO_WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "1",
            "DJANGO_LOG_LEVEL": "WARNING",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_THROTTLE_USER": "100000000/min",
            "REDIS_URL": redis_url,
        }
        command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--tree", str(tree)]
        process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        processes.append(process)

    samples = [{"adjust": [], "batch": []} for _ in variants]
    try:
        for process in processes:  # warm-up, discarded
            process.stdin.write("run 30\n")
            process.stdin.flush()
            process.stdout.readline()
        for round_number in range(args.rounds):
            # Rotate who goes first, so no variant always follows the same one.
            order = list(range(len(variants)))
            order = order[round_number % len(order) :] + order[: round_number % len(order)]
            for index in order:
                processes[index].stdin.write(f"run {args.per_round}\n")
                processes[index].stdin.flush()
                result = json.loads(processes[index].stdout.readline())
                for key in ("adjust", "batch"):
                    samples[index][key] += result[key]
    finally:
        for process in processes:
            process.stdin.close()
            process.wait()
        for _, _, _, database, _ in variants:
            subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=True)

    def quantile(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(len(values) * q))]

    count = args.rounds * args.per_round
    print(
        f"\nms per request, {count} adjustments and {count} batches (10 items) per variant, "
        f"{args.rounds} interleaved rounds\n"
    )
    print("| variant | adjust p50 | adjust p95 | batch p50 | batch p95 | adjust p50 / today | batch p50 / today |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    today = samples[0]
    for (label, *_), sample in zip(variants, samples):
        adjust, batch = statistics.median(sample["adjust"]), statistics.median(sample["batch"])
        print(
            f"| {label} | {adjust:.2f} | {quantile(sample['adjust'], 0.95):.2f} | {batch:.2f} | "
            f"{quantile(sample['batch'], 0.95):.2f} | {adjust / statistics.median(today['adjust']):.2f}x | "
            f"{batch / statistics.median(today['batch']):.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
