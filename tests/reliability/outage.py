"""Database outage and a killed worker, under load, with nothing lost.

Runs its own PostgreSQL (initdb into a temporary directory, port 5499 by default; never
the machine's shared server) and gunicorn (production settings, 2 workers) on it, puts
mixed load on it from this process, and meanwhile:

1. stops PostgreSQL for --down seconds, then starts it again. While it is down every API
   request must fail fast (well under --fast seconds) with a 503 JSON answer, and /readyz
   must say so; once it is back the same gunicorn (no restart) must serve again within
   --recover seconds. Writes that failed are retried with their Idempotency-Key.
2. kills one gunicorn worker with SIGKILL while it is serving; the master must replace it.

Then the books must balance: the ledger invariant for every widget, no half-written
movement, the stock total equal to the initial total plus the deltas of the 201s seen, and
the database holding exactly the movements the 201s reported (every retried write applied
exactly once).

    python tests/reliability/outage.py --seconds 40    # the full run
    python tests/reliability/outage.py --seconds 20    # the CI run

Environment: OUTAGE_PG_PORT (default 5499), OUTAGE_PORT (gunicorn, default 8403),
PG_BIN (default /usr/lib/postgresql/15/bin).
"""

import argparse
import os
import signal
import sys
import threading
import time

import harness
from harness import log
from loadgen import LoadGenerator


class Prober:
    """Polls /readyz every 0.25 s from its own thread; keeps (t, status, seconds, json, body)."""

    def __init__(self, url: str, clock):
        self.url, self.clock, self.samples = url, clock, []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_event.is_set():
            start = self.clock()
            try:
                status, headers, body = harness.request("GET", f"{self.url}/readyz", timeout=10)
                is_json = headers.get("Content-Type", "").startswith("application/json")
            except OSError:
                status, is_json, body = None, False, None
            self.samples.append((start, status, self.clock() - start, is_json, body))
            time.sleep(0.25)

    def first_ok_after(self, moment: float):
        return next((t for t, status, *_ in self.samples if t >= moment and status == 200), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40, help="length of the load")
    parser.add_argument("--down", type=float, default=5, help="seconds the database stays down")
    parser.add_argument("--fast", type=float, default=3, help="slowest acceptable answer while it is down")
    parser.add_argument("--recover", type=float, default=5, help="seconds allowed to serve again after it is back")
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--widgets", type=int, default=200)
    args = parser.parse_args()

    pg_port = int(os.environ.get("OUTAGE_PG_PORT", "5499"))
    port = int(os.environ.get("OUTAGE_PORT", "8403"))
    problems: list[str] = []
    postgres = harness.PrivatePostgres(pg_port)
    try:
        postgres.start()
        database_url = harness.recreate_database(postgres.admin_url, "widgets_outage")
        env = harness.base_env(database_url, DJANGO_DB_CONNECT_TIMEOUT="2")
        roles = {"outage-clerk-1": "clerk", "outage-clerk-2": "clerk", "outage-manager": "manager"}
        tokens = harness.prepare(env, widgets=args.widgets, roles=roles)
        widget_ids = [int(pk) for pk in harness.sql(database_url, "SELECT id FROM widgets_widget ORDER BY id")]
        initial_total = harness.stock_total(database_url)

        with harness.gunicorn(env, port, workers=2) as server:
            master = server.process.pid
            load = LoadGenerator(
                port, list(tokens.values()), widget_ids, threads=args.threads, timeout=10, write_deadline=90
            )
            prober = Prober(server.url, load.elapsed)
            load.start()
            prober.thread.start()
            log(f"load started: {args.seconds:.0f} s, {args.threads} threads, {len(tokens)} tokens")

            # 1. The database goes away, and comes back.
            time.sleep(args.seconds * 0.2)
            stopping_at = load.elapsed()
            postgres.stop("fast")  # ends every session, rolling back open transactions
            down_at = load.elapsed()
            log(f"PostgreSQL stopped at t={down_at:.1f}s")
            time.sleep(args.down)
            up_at = load.elapsed()
            postgres.start()
            started_at = load.elapsed()
            log(f"PostgreSQL started at t={started_at:.1f}s")
            harness.wait_until(lambda: prober.first_ok_after(up_at) is not None, timeout=args.recover + 10)
            ready_at = prober.first_ok_after(up_at)

            # 2. A worker dies mid-request.
            time.sleep(max(0.0, args.seconds * 0.6 - load.elapsed()))
            workers_before = server.worker_pids()
            victim = workers_before[0]
            killed_at = load.elapsed()
            os.kill(victim, signal.SIGKILL)
            log(f"worker {victim} killed at t={killed_at:.1f}s")
            replaced = harness.wait_until(
                lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(), timeout=15
            )
            replaced_at = load.elapsed()
            workers_after = server.worker_pids()

            time.sleep(max(0.0, args.seconds - load.elapsed()))
            load.stop()
            prober.stop_event.set()
            prober.thread.join()
            master_survived = server.process.poll() is None and server.process.pid == master
            server_log = server.log()

        stats = load.stats
        summary = stats.summary()
        # --- while it was down: fast, JSON, 503 -------------------------------------------
        during = [o for o in stats.outcomes if down_at + 0.5 <= o.at < up_at]
        during_statuses = stats.statuses(down_at + 0.5, up_at)
        slowest_during = max((o.seconds for o in during), default=0.0)
        probes_down = [s for s in prober.samples if down_at + 0.5 <= s[0] < up_at]
        if not during:
            problems.append("no requests were made while the database was down")
        if set(during_statuses) - {503} - set(range(200, 500)):
            problems.append(f"while down, answers other than 503/2xx/4xx: {dict(during_statuses)}")
        if any(not o.json for o in during):
            problems.append("while down, some answers were not JSON")
        if slowest_during > args.fast:
            problems.append(f"while down, the slowest answer took {slowest_during:.1f} s (> {args.fast} s)")
        if not probes_down or any(
            s[1] != 503 or not s[3] or (s[4] or {}).get("database") != "unreachable" for s in probes_down
        ):
            problems.append(f"/readyz did not report the outage as 503 JSON: {[s[:2] for s in probes_down][:5]}")
        # --- after it came back: recovered by itself -------------------------------------
        # Measured from the moment PostgreSQL accepts connections again (pg_ctl start -w returned).
        recovery = None if ready_at is None else max(0.0, ready_at - started_at)
        if recovery is None or recovery > args.recover:
            problems.append(f"/readyz not ready within {args.recover} s of the database's return (took {recovery})")
        # A 5xx is expected only of a request in flight between the stop and the recovery.
        first_served = min(
            (
                o.at + o.seconds
                for o in stats.outcomes
                if o.at >= started_at and o.status is not None and 200 <= o.status < 300
            ),
            default=None,
        )
        api_recovery = None if first_served is None else first_served - started_at
        if api_recovery is None or api_recovery > args.recover:
            problems.append(f"the API did not serve within {args.recover} s of the database's return ({api_recovery})")
        late_5xx = [
            o
            for o in stats.outcomes
            if o.status is not None
            and o.status >= 500
            and not (o.at + o.seconds >= stopping_at and o.at < (ready_at or up_at) + 1)
        ]
        if late_5xx:
            problems.append(
                f"{len(late_5xx)} 5xx answers outside the outage: {[(round(o.at, 1), o.status) for o in late_5xx[:5]]}"
            )
        after = stats.statuses((ready_at or up_at) + 1, killed_at)
        if not any(200 <= (status or 0) < 300 for status in after):
            problems.append("no successful request between the recovery and the worker kill")
        # --- the killed worker ---------------------------------------------------------------
        if not replaced:
            problems.append(f"the killed worker was not replaced: before {workers_before}, after {workers_after}")
        if not master_survived:
            problems.append("the gunicorn master did not survive")
        dropped = [o for o in stats.outcomes if o.status is None]
        stray_drops = [
            o
            for o in dropped
            if not (stopping_at <= o.at + o.seconds and o.at < up_at + 1 or killed_at - 11 <= o.at < replaced_at + 1)
        ]
        if stray_drops:
            problems.append(f"{len(stray_drops)} requests got no answer outside the two incidents")
        if stats.resend_mismatches:
            problems.append(f"{len(stats.resend_mismatches)} writes sent again were not replayed identically")
        if stats.unanswered_writes:
            problems.append(f"{len(stats.unanswered_writes)} writes never got an answer")
        if sum(1 for o in stats.outcomes if o.status is not None and not o.json):
            problems.append("some answers were not JSON")
        if "Traceback" in server_log:
            problems.append("the server logged a traceback")
        # --- the books -------------------------------------------------------------------------
        figures, book_problems = harness.verify_books(
            env, database_url, initial_total=initial_total, movements_seen=stats.movements
        )
        problems += book_problems

        report = {
            "seconds": args.seconds,
            "threads": args.threads,
            "widgets": len(widget_ids),
            "database_stopping_at_s": round(stopping_at, 2),
            "database_down_at_s": round(down_at, 2),
            "database_up_at_s": round(up_at, 2),
            "database_accepting_again_at_s": round(started_at, 2),
            "down_for_s": round(started_at - down_at, 2),
            "requests_while_down": len(during),
            "statuses_while_down": {str(k): v for k, v in during_statuses.items()},
            "slowest_answer_while_down_ms": round(1000 * slowest_during),
            "readyz_probes_while_down": len(probes_down),
            "readyz_ok_after_database_back_s": None if recovery is None else round(recovery, 2),
            "api_2xx_after_database_back_s": None if api_recovery is None else round(api_recovery, 2),
            "worker_killed": victim,
            "worker_killed_at_s": round(killed_at, 2),
            "worker_replaced_in_s": round(replaced_at - killed_at, 2) if replaced else None,
            "requests_without_answer_at_kill": sum(1 for o in dropped if killed_at - 11 <= o.at < replaced_at + 1),
            **summary,
            **figures,
            "problems": problems,
        }
        path = harness.write_report("outage", report)
        log(f"report: {path}")
        for name, value in report.items():
            print(f"  {name}: {value}")
        if problems:
            log("FAILED:\n  " + "\n  ".join(problems))
            if "Traceback" in server_log:
                print(server_log[-6000:])
            return 1
        log("outage: OK")
        return 0
    finally:
        postgres.destroy()


if __name__ == "__main__":
    sys.exit(main())
