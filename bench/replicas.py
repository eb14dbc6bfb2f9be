"""List and retrieve throughput with one read replica, against the primary alone.

    python bench/run.py --replica                      # 10k widgets, 3 repetitions of 10 s
    python bench/run.py --replica --sizes 100000 --reps 1

Runs its own PostgreSQL 15 primary and a streaming replica of it (pg_basebackup -R, as
tests/reliability/replicas.py does; ports BENCH_REPLICA_PG_PORTS, default 5510,5511),
seeds the primary, and serves the app (gunicorn, production settings, 2 workers) twice on
the same data: once on the primary alone, once with DATABASE_REPLICA_URLS naming the
replica. wrk drives list and retrieve against each, alternately first. The replica's own
pg_stat_database counters are recorded with each run, to show who served the reads.

Every server here shares one machine: a replica only adds capacity when it has CPUs of its
own (another RDS instance), so on one host expect the two to be close, and read the
figures as the cost of the routing, not the gain of a second server.
"""

import datetime
import json
import os
import secrets
import subprocess
import sys

from run import APP_PORT, OUT, ROOT, gunicorn_args, log, manage, median, port_is_free, wait_until_up, wrk

sys.path.insert(0, str(ROOT / "tests" / "reliability"))
import harness  # noqa: E402

DATABASE = "widgets_bench_replicas"
SCENARIOS = ["list", "retrieve"]
MARK_START, MARK_END = "<!-- replicas:start -->", "<!-- replicas:end -->"


def replica_reads(replica_url: str) -> int:
    """Transactions the replica has served in the benchmark database so far."""
    (count,) = harness.sql(replica_url, f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DATABASE}'")
    return int(count)


def main(options) -> None:
    size = int(options.sizes.split(",")[0])
    primary_port, replica_port = (int(p) for p in os.environ.get("BENCH_REPLICA_PG_PORTS", "5510,5511").split(","))
    if not port_is_free(APP_PORT):
        raise SystemExit(f"port {APP_PORT} is in use: stop whatever listens there first")
    OUT.mkdir(exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    primary = harness.PrivatePostgres(primary_port)
    replica = None
    try:
        primary.start()
        db_url = harness.recreate_database(primary.admin_url, DATABASE)
        env = {
            **os.environ,
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": db_url,
            "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6"),
            "DJANGO_CACHE_KEY_PREFIX": f"bench-replicas-{secrets.token_hex(4)}",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONPATH": str(ROOT),
            "DJANGO_THROTTLE_USER": os.environ.get("BENCH_THROTTLE_USER", "100000000/min"),
        }
        env.pop("DJANGO_DEBUG", None)
        env.pop("DATABASE_REPLICA_URLS", None)
        log(f"private primary on {primary_port}: migrating and seeding {size} widgets")
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "collectstatic", "--noinput", "-v0")
        manage(
            env,
            "shell",
            "-c",
            (
                "from django.contrib.auth.models import User, Group; "
                "u = User.objects.create_user('bench'); u.groups.add(Group.objects.get(name='clerk'))"
            ),
        )
        env["TOKEN"] = manage(env, "issue_token", "bench", "--name", "bench", "--expires-days", "0", capture=True)
        manage(env, "seed_widgets", "--count", str(size), "-v0")
        harness.sql(db_url, "VACUUM ANALYZE")
        env["MIN_ID"], env["MAX_ID"] = harness.sql(db_url, "SELECT min(id), max(id) FROM widgets_widget")[0].split("|")

        log(f"streaming replica on {replica_port}")
        replica = harness.PrivatePostgres(replica_port, standby_of=primary)
        replica.start()
        replica_url = f"postgres://postgres@127.0.0.1:{replica_port}/{DATABASE}"

        def caught_up():
            primary_lsn = harness.sql(db_url, "SELECT pg_current_wal_lsn()")[0]
            return harness.sql(replica_url, f"SELECT pg_last_wal_replay_lsn() >= '{primary_lsn}'") == ["t"]

        if not harness.wait_until(caught_up, timeout=120):
            raise RuntimeError("the replica did not catch up")

        setups = {"primary": {}, "replica": {"DATABASE_REPLICA_URLS": replica_url}}
        runs = {scenario: {name: [] for name in setups} for scenario in SCENARIOS}
        served = {name: 0 for name in setups}
        for rep in range(options.reps):
            # Alternate who goes first, so neither always meets a warmer machine.
            for name in list(setups) if rep % 2 == 0 else list(setups)[::-1]:
                with open(OUT / f"server-replicas-{name}.log", "w") as server_log:
                    server = subprocess.Popen(
                        gunicorn_args(APP_PORT, "config.wsgi"),
                        env={**env, **setups[name]},
                        cwd=ROOT,
                        stdout=server_log,
                        stderr=subprocess.STDOUT,
                    )
                    try:
                        wait_until_up(APP_PORT, server)
                        for scenario in SCENARIOS:
                            wrk(APP_PORT, scenario, 2, options.connections, env)  # warm-up
                        before = replica_reads(replica_url)
                        for scenario in SCENARIOS:
                            result = wrk(APP_PORT, scenario, options.seconds, options.connections, env)
                            runs[scenario][name].append(result)
                            log(
                                f"rep {rep + 1} {scenario:8} {name:7} {result['rps']:7.0f} req/s "
                                f"p50 {result['p50_us'] / 1000:.1f} ms p99 {result['p99_us'] / 1000:.1f} ms "
                                f"errors {result['errors'] + result['non2xx']}"
                            )
                        served[name] += replica_reads(replica_url) - before
                    finally:
                        server.terminate()
                        server.wait(timeout=30)
    finally:
        if replica is not None:
            replica.destroy()
        primary.destroy()

    finished = datetime.datetime.now(datetime.UTC)
    report = render(runs, served, size, options, started, finished)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (OUT / f"replicas-{stamp}.json").write_text(json.dumps({"runs": runs, "replica_transactions": served}, indent=1))
    print(report)
    if not options.no_write:
        path = ROOT / "bench" / "RESULTS.md"
        text = path.read_text() if path.exists() else "# Benchmark results\n"
        if MARK_START not in text:
            text = text.rstrip("\n") + f"\n\n## Read replicas\n\n{MARK_START}\n{MARK_END}\n"
        head, rest = text.split(MARK_START, 1)
        path.write_text(f"{head}{MARK_START}\n{report}\n{MARK_END}{rest.split(MARK_END, 1)[1]}")
        log(f"wrote {path}")


def render(runs, served, size, options, started, finished) -> str:
    lines = [
        f"Run {started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC: {size:,} widgets, `python bench/run.py --replica "
        f"--sizes {size} --reps {options.reps} --seconds {options.seconds}` ({options.reps} repetition(s) of "
        f"{options.seconds} s, wrk -t2 -c{options.connections}, medians; primary, replica, app and wrk on one "
        f"{os.cpu_count()}-CPU machine)",
        "",
        "| scenario | primary alone req/s | with one replica req/s | ratio | p50 ms alone / replica | "
        "p99 ms alone / replica | errors |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for scenario, by_setup in runs.items():
        alone, replica = by_setup["primary"], by_setup["replica"]
        rps = [median([r["rps"] for r in rs]) for rs in (alone, replica)]
        p50 = [median([r["p50_us"] for r in rs]) / 1000 for rs in (alone, replica)]
        p99 = [median([r["p99_us"] for r in rs]) / 1000 for rs in (alone, replica)]
        errors = [sum(r["errors"] + r["non2xx"] for r in rs) for rs in (alone, replica)]
        lines.append(
            f"| {scenario} | {rps[0]:.0f} | {rps[1]:.0f} | {rps[1] / rps[0]:.2f}x | {p50[0]:.1f} / {p50[1]:.1f} | "
            f"{p99[0]:.1f} / {p99[1]:.1f} | {errors[0]} / {errors[1]} |"
        )
    lines += [
        "",
        f"Transactions the replica served during the measured runs: {served['replica']:,} with it configured, "
        f"{served['primary']:,} without.",
    ]
    return "\n".join(lines) + "\n"
