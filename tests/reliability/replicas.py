"""Read replicas, for real: a streaming replica, the real server, concurrent clients.

Runs a private PostgreSQL 15 primary (initdb, port 5510) and a streaming replica of it
(pg_basebackup -R, port 5511), and gunicorn (production settings, 2 workers, Redis for the
read-your-writes marker) with DATABASE_REPLICA_URLS naming the replica. Then, over HTTP:

1. /readyz reports the replica.
2. Reads are served by the replica. Replay is paused on the replica, and a widget renamed
   on the primary behind the app's back: a client that has not written still sees the old
   name, which only the replica holds. (pg_stat_activity on the replica shows the app's
   connections as well; the report records them.)
3. Read-your-writes under concurrent clients, with replay still paused, so any read of a
   writer's own data from the replica would miss it: --writers threads, each its own user,
   create a widget, read it back at once, rename it and adjust its stock, reading back each
   time. Not one read may miss a write. A reader thread meanwhile keeps seeing the replica.
4. The stickiness window ends: DATABASE_REPLICA_STICKY_SECONDS after its last write a
   writer reads from the (still paused) replica again, where its widget does not exist yet.
5. Replay resumes; the replica catches up.
6. The replica stops under mixed load (reads, adjustments, batches from loadgen): no
   request is lost (no 5xx, no dropped connection), /readyz stays 200 and says the replica
   is unreachable; it starts again and is used again.
7. The replica drops the app's connections every 5 ms under load (pg_terminate_backend, as
   a restart or a recovery conflict would, some of them mid-request): no request is lost.
   The books balance at the end.

    python tests/reliability/replicas.py              # about a minute

Environment: REPLICA_PG_PORTS (primary,replica; default 5510,5511), REPLICA_APP_PORT
(gunicorn, default 8560), REPLICA_REDIS_URL (default redis://127.0.0.1:6379/13),
PG_BIN (default /usr/lib/postgresql/15/bin). Exits 1 with the problems listed when a check fails;
the figures go to test-artifacts/reliability/replicas.json.
"""

import argparse
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter

import harness
import psycopg2
from harness import log
from loadgen import LoadGenerator

DATABASE = "widgets_replicas"


def lsn_caught_up(primary_url: str, replica_url: str) -> bool:
    (target,) = harness.sql(primary_url, "SELECT pg_current_wal_lsn()")
    (replayed,) = harness.sql(replica_url, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
    return replayed == "t"


class Client:
    """One API user over HTTP; every answer that breaks read-your-writes is a problem."""

    def __init__(self, url: str, token: str, name: str, problems: list[str]):
        self.url, self.token, self.name, self.problems = url, token, name, problems
        self.reads = 0

    def call(self, method: str, path: str, body=None, expect: int = 200):
        status, _, data = harness.request(method, f"{self.url}{path}", token=self.token, body=body)
        if status != expect:
            self.problems.append(f"{self.name}: {method} {path} answered {status}, not {expect}: {data}")
            return None
        return data

    def read_back(self, widget_id: int, **expected) -> None:
        self.reads += 1
        data = self.call("GET", f"/api/widgets/{widget_id}/")
        if data is not None and any(data[field] != value for field, value in expected.items()):
            seen = {field: data[field] for field in expected}
            self.problems.append(f"{self.name}: read its own write as missing: expected {expected}, got {seen}")


class Readers:
    """Threads reading as a user who never writes, so that their reads go to the replica (the
    load generator's users write too, which keeps their own reads on the primary)."""

    def __init__(self, url: str, token: str, widget_ids: list[int], threads: int = 3):
        self.url, self.token, self.widget_ids = url, token, widget_ids
        self.statuses: Counter = Counter()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop_event.is_set():
            widget = rng.choice(self.widget_ids)
            path = rng.choice(
                [f"/api/widgets/{widget}/", "/api/widgets/?limit=20", f"/api/widgets/{widget}/movements/"]
            )
            try:
                status = harness.request("GET", f"{self.url}{path}", token=self.token)[0]
            except OSError:
                status = None
            self.statuses[status] += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for thread in self.threads:
            thread.join()

    def lost(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 200)


def writer(client: Client, rounds: int, created: list[int], movements: dict[int, int]) -> None:
    for round_ in range(rounds):
        sku = f"RYW-{uuid.uuid4().hex[:10]}"
        widget = client.call(
            "POST", "/api/widgets/", {"name": f"{client.name} {round_}", "sku": sku, "stock": 5}, expect=201
        )
        if widget is None:
            continue
        created.append(widget["id"])
        client.read_back(widget["id"], name=f"{client.name} {round_}", stock=5)
        renamed = f"{client.name} {round_} renamed"
        if client.call("PATCH", f"/api/widgets/{widget['id']}/", {"name": renamed}) is not None:
            client.read_back(widget["id"], name=renamed)
        movement = client.call(
            "POST", f"/api/widgets/{widget['id']}/adjust/", {"delta": 3, "reason": "received"}, expect=201
        )
        if movement is not None:
            movements[movement["id"]] = movement["delta"]
            client.read_back(widget["id"], stock=8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=4, help="concurrent writing clients")
    parser.add_argument("--rounds", type=int, default=10, help="create/rename/adjust rounds per writer")
    parser.add_argument("--sticky", type=int, default=3, help="DATABASE_REPLICA_STICKY_SECONDS for the server")
    parser.add_argument("--load-seconds", type=float, default=12, help="mixed load while the replica stops")
    args = parser.parse_args()

    primary_port, replica_port = (int(p) for p in os.environ.get("REPLICA_PG_PORTS", "5510,5511").split(","))
    port = int(os.environ.get("REPLICA_APP_PORT", "8560"))
    redis_url = os.environ.get("REPLICA_REDIS_URL", "redis://127.0.0.1:6379/13")
    problems: list[str] = []
    report: dict = {}
    primary = harness.PrivatePostgres(primary_port)
    replica = None
    try:
        primary.start()
        primary_url = harness.recreate_database(primary.admin_url, DATABASE)
        env = harness.base_env(primary_url)
        roles = {f"writer-{n}": "manager" for n in range(args.writers)}
        roles.update({"reader": "viewer", "load-1": "clerk", "load-2": "clerk"})
        tokens = harness.prepare(env, widgets=100, roles=roles)
        log(f"primary on {primary_port} migrated and seeded; taking a base backup for the replica")
        replica = harness.PrivatePostgres(replica_port, standby_of=primary)
        replica.start()
        replica_url = f"postgres://postgres@127.0.0.1:{replica_port}/{DATABASE}"
        if not harness.wait_until(lambda: lsn_caught_up(primary_url, replica_url), timeout=30):
            raise RuntimeError("the replica did not catch up with the primary")
        (in_recovery,) = harness.sql(replica_url, "SELECT pg_is_in_recovery()")
        assert in_recovery == "t", "the replica is not a standby"

        env.update(
            DATABASE_REPLICA_URLS=replica_url,
            DATABASE_REPLICA_STICKY_SECONDS=str(args.sticky),
            DATABASE_REPLICA_RETRY_SECONDS="2",
            REDIS_URL=redis_url,
            DJANGO_CACHE_KEY_PREFIX=f"replicas-{uuid.uuid4().hex[:8]}",
            DJANGO_THROTTLE_USER="100000/min",
        )
        with harness.gunicorn(env, port, workers=2) as server:
            url = server.url
            reader = Client(url, tokens["reader"], "reader", problems)

            # 1. /readyz names the replica.
            ready = reader.call("GET", "/readyz")
            report["readyz"] = ready
            if ready != {"status": "ok", "database": "ok", "replicas": {"replica_0": "ok"}}:
                problems.append(f"/readyz with a healthy replica: {ready}")

            # 2. Reads come from the replica: pause its replay, change the primary behind the app.
            harness.sql(replica_url, "SELECT pg_wal_replay_pause()")
            (marker_id,) = harness.sql(primary_url, "SELECT min(id) FROM widgets_widget")
            (old_name,) = harness.sql(replica_url, f"SELECT name FROM widgets_widget WHERE id = {marker_id}")
            harness.sql(primary_url, f"UPDATE widgets_widget SET name = 'only on the primary' WHERE id = {marker_id}")
            names = {reader.call("GET", f"/api/widgets/{marker_id}/")["name"] for _ in range(20)}
            listed = reader.call("GET", "/api/widgets/?ordering=id&limit=1")["results"][0]["name"]
            report["reads_while_replay_paused"] = {"retrieve": sorted(names), "list": listed}
            if names != {old_name} or listed != old_name:
                problems.append(
                    f"reads did not come from the replica: saw {names} and {listed!r}, replica has {old_name!r}"
                )
            report["replica_pg_stat_activity"] = harness.sql(
                replica_url,
                f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DATABASE}' AND backend_type = "
                "'client backend' "
                "AND pid <> pg_backend_pid()",
            )

            # 3. Read-your-writes, concurrently, with the replica frozen.
            log(f"{args.writers} writers x {args.rounds} rounds, replay paused, reader alongside")
            created: dict[str, list[int]] = {}
            adjusted: dict[int, int] = {}  # movement id -> delta, for the books at the end
            writers = []
            for n in range(args.writers):
                name = f"writer-{n}"
                created[name] = []
                client = Client(url, tokens[name], name, problems)
                writers.append(
                    (client, threading.Thread(target=writer, args=(client, args.rounds, created[name], adjusted)))
                )
            stale_reads, stop_reader = [], threading.Event()

            def keep_reading():
                while not stop_reader.is_set():
                    stale_reads.append(reader.call("GET", f"/api/widgets/{marker_id}/")["name"] == old_name)

            background = threading.Thread(target=keep_reading)
            background.start()
            for _, thread in writers:
                thread.start()
            for _, thread in writers:
                thread.join()
            stop_reader.set()
            background.join()
            report["read_your_writes"] = {
                "writers": args.writers,
                "reads_of_own_writes": sum(client.reads for client, _ in writers),
                "widgets_created": sum(len(ids) for ids in created.values()),
                "reader_requests_meanwhile": len(stale_reads),
                "reader_requests_served_by_the_replica": sum(stale_reads),
            }
            if not all(stale_reads):
                problems.append("a client that never wrote read from the primary while others wrote")

            # 4. The window ends: back on the frozen replica, where the writer's widget is not yet.
            time.sleep(args.sticky + 1)
            first = created["writer-0"][0]
            status, _, _ = harness.request("GET", f"{url}/api/widgets/{first}/", token=tokens["writer-0"])
            report["after_the_window"] = status
            if status != 404:
                problems.append(f"after the stickiness window the writer still reads the primary ({status}, not 404)")

            # 5. Replay resumes and the replica catches up.
            harness.sql(replica_url, "SELECT pg_wal_replay_resume()")
            if not harness.wait_until(lambda: lsn_caught_up(primary_url, replica_url), timeout=30):
                problems.append("the replica did not catch up after replay resumed")
            reader.call("GET", f"/api/widgets/{first}/")

            # 6. The replica stops under load, and starts again.
            widget_ids = [int(pk) for pk in harness.sql(primary_url, "SELECT id FROM widgets_widget ORDER BY id")]
            initial_total = harness.stock_total(primary_url) - sum(adjusted.values())
            load = LoadGenerator(port, [tokens["load-1"], tokens["load-2"]], widget_ids, threads=4, resend_ratio=0)
            log(f"mixed load for {args.load_seconds:.0f} s; the replica stops after 3 s")
            load.start()
            with Readers(url, tokens["reader"], widget_ids) as readers:
                time.sleep(3)
                stopped_at = load.elapsed()
                replica.stop("fast")
                time.sleep(1)
                ready_without = harness.request("GET", f"{url}/readyz")
                time.sleep(max(0.0, args.load_seconds / 2 - 4))
                replica.start()
                time.sleep(max(0.0, args.load_seconds - load.elapsed()))
                load.stop()
            ready_again = None
            if harness.wait_until(
                lambda: harness.request("GET", f"{url}/readyz")[2].get("replicas") == {"replica_0": "ok"}, timeout=15
            ):
                ready_again = harness.request("GET", f"{url}/readyz")[2]
            summary = load.stats.summary()
            report["replica_stopped_under_load"] = {
                "stopped_at_s": round(stopped_at, 2),
                "readyz_while_stopped": ready_without[::2],
                "readyz_after_restart": ready_again,
                "load": summary,
                "reader_statuses": dict(readers.statuses),
            }
            if summary["5xx"] or summary["no_answer"] or summary["retried_writes"] or summary["unanswered_writes"]:
                problems.append(f"requests were lost while the replica stopped: {summary}")
            if readers.lost():
                problems.append(f"reads were lost while the replica stopped: {dict(readers.statuses)}")
            if ready_without[0] != 200 or ready_without[2].get("replicas") != {"replica_0": "unreachable"}:
                problems.append(f"/readyz with the replica stopped: {ready_without[0]} {ready_without[2]}")
            if ready_again is None:
                problems.append("/readyz did not report the replica ok again after it restarted")
            # 7. The replica drops connections mid-request (as a restart or a recovery conflict
            #    does): every 5 ms its app connections are terminated under load.
            adjusted.update(load.stats.movements)
            load = LoadGenerator(port, [tokens["load-1"], tokens["load-2"]], widget_ids, threads=4, resend_ratio=0)
            log(f"the replica's connections terminated every 5 ms for {args.load_seconds / 2:.0f} s of load")
            kill = (
                f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{DATABASE}' "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            terminated = 0
            killer = psycopg2.connect(replica_url)
            killer.autocommit = True
            load.start()
            with Readers(url, tokens["reader"], widget_ids) as readers, killer.cursor() as cursor:
                while load.elapsed() < args.load_seconds / 2:
                    cursor.execute(kill)
                    terminated += cursor.fetchone()[0]
                    time.sleep(0.005)
                load.stop()
            killer.close()
            summary = load.stats.summary()
            retried = [line for line in server.log().splitlines() if "unreachable" in line and " answered 5" in line]
            report["replica_connections_terminated_under_load"] = {
                "connections_terminated": terminated,
                "requests_retried_on_the_primary": len(retried),
                "load": summary,
                "reader_statuses": dict(readers.statuses),
            }
            if summary["5xx"] or summary["no_answer"] or summary["retried_writes"] or summary["unanswered_writes"]:
                problems.append(f"requests were lost while the replica dropped connections: {summary}")
            if readers.lost():
                problems.append(f"reads were lost while the replica dropped connections: {dict(readers.statuses)}")
            adjusted.update(load.stats.movements)

            warnings = [line for line in server.log().splitlines() if "Read replica replica_0 unreachable" in line]
            report["replica_stopped_under_load"]["breaker_trips_logged"] = len(warnings)
            if not warnings:
                problems.append("the server never logged the replica as unreachable: did reads use it?")
            figures, book_problems = harness.verify_books(
                env, primary_url, initial_total=initial_total, movements_seen=adjusted
            )
            report["books"] = figures
            problems.extend(book_problems)
    finally:
        if replica is not None:
            replica.destroy()
        primary.destroy()

    report["problems"] = problems
    path = harness.write_report("replicas", report)
    for name, value in report.items():
        log(f"{name}: {value}")
    log(f"report: {path}")
    if problems:
        log("FAILED:\n- " + "\n- ".join(problems))
        return 1
    log("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
