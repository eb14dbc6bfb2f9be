"""Sustained load: gunicorn (production settings, 2 workers) on PostgreSQL under mixed load.

A separate process (this one) sends 80% reads, 15% single adjustments and 5% batches from
several tokens for --seconds, then checks: no 5xx, every answer JSON, every write answered,
the ledger invariant for every widget, and the stock total equal to the initial total plus
the deltas of all 201 responses seen (the database holds exactly the movements the 201s
reported: nothing lost, nothing invented, nothing applied twice).

    python tests/reliability/load.py --seconds 60      # the full run
    python tests/reliability/load.py --seconds 20      # the CI run

Environment: ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
LOAD_DATABASE (default widgets_load), LOAD_PORT (default 8402).
"""

import argparse
import os
import sys
import time

import harness
from harness import log
from loadgen import LoadGenerator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=6, help="concurrent client threads")
    parser.add_argument("--widgets", type=int, default=300)
    args = parser.parse_args()

    admin_url = os.environ.get("ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    db_name = os.environ.get("LOAD_DATABASE", "widgets_load")
    port = int(os.environ.get("LOAD_PORT", "8402"))
    database_url = harness.recreate_database(admin_url, db_name)
    try:
        env = harness.base_env(database_url)
        roles = {"load-clerk-1": "clerk", "load-clerk-2": "clerk", "load-clerk-3": "clerk", "load-manager": "manager"}
        tokens = harness.prepare(env, widgets=args.widgets, roles=roles)
        widget_ids = [int(pk) for pk in harness.sql(database_url, "SELECT id FROM widgets_widget ORDER BY id")]
        initial_total = harness.stock_total(database_url)

        with harness.gunicorn(env, port, workers=2) as server:
            load = LoadGenerator(port, list(tokens.values()), widget_ids, threads=args.threads)
            log(f"{args.seconds:.0f} s of mixed load, {args.threads} client threads, {len(tokens)} tokens")
            load.start()
            time.sleep(args.seconds)
            load.stop()
            server_log = server.log()

        summary = load.stats.summary()
        figures, problems = harness.verify_books(
            env, database_url, initial_total=initial_total, movements_seen=load.stats.movements
        )
        if summary["5xx"]:
            problems.append(f"{summary['5xx']} responses were 5xx")
        if summary["no_answer"]:
            problems.append(f"{summary['no_answer']} requests got no HTTP answer")
        if summary["not_json"]:
            problems.append(f"{summary['not_json']} responses were not JSON")
        if load.stats.resend_mismatches:
            problems.append(f"{len(load.stats.resend_mismatches)} writes sent again were not replayed identically")
        if summary["unanswered_writes"]:
            problems.append(f"{summary['unanswered_writes']} writes never got an answer")
        if "Traceback" in server_log:
            problems.append("the server logged a traceback")
        report = {
            "seconds": args.seconds,
            "threads": args.threads,
            "widgets": len(widget_ids),
            "requests_per_second": round(summary["requests"] / args.seconds, 1),
            **summary,
            **figures,
            "problems": problems,
        }
        path = harness.write_report("load", report)
        log(f"report: {path}")
        for name, value in report.items():
            print(f"  {name}: {value}")
        if problems:
            log("FAILED:\n  " + "\n  ".join(problems))
            if "Traceback" in server_log:
                print(server_log[-4000:])
            return 1
        log("load: OK")
        return 0
    finally:
        harness.drop_database(admin_url, db_name)


if __name__ == "__main__":
    sys.exit(main())
