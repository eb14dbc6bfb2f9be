"""Benchmark the API against the raw floor, side by side. See bench/README.md.

    python bench/run.py            # full run: 10k, 100k, 1M widgets, 3 repetitions
    python bench/run.py --quick    # 10k widgets, 1 repetition, short runs
    python bench/run.py --replica  # list and retrieve, one read replica against the primary alone

Recreates the benchmark database (BENCH_DATABASE_URL, default widgets_bench), seeds
it incrementally with seed_widgets, serves the app (gunicorn, production settings,
2 workers), the floor (bench/floor.py, same gunicorn settings) and the FastAPI reference
(bench/fastapi_ref, uvicorn, 2 workers, in its own venv bench/.venv-fastapi; --no-fastapi
skips it), checks that the three answer the same JSON, drives each with wrk and writes
the results into bench/RESULTS.md between the results markers.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "results"
PYTHON = sys.executable
SCENARIOS = ["list", "filtered", "retrieve", "adjust", "batch", "keyset", "reserve"]
# BENCH_APP_PORT / BENCH_FLOOR_PORT: another pair, e.g. for a smoke run on a shared machine.
APP_PORT = int(os.environ.get("BENCH_APP_PORT", "8601"))
FLOOR_PORT = int(os.environ.get("BENCH_FLOOR_PORT", "8602"))
FASTAPI_PORT = int(os.environ.get("BENCH_FASTAPI_PORT", "8603"))
# The FastAPI reference's own virtualenv (git-ignored), so the app's requirements stay its own.
FASTAPI_VENV = BENCH / ".venv-fastapi"
FASTAPI_REQUIREMENTS = BENCH / "requirements-fastapi.txt"
# As many worker processes as the app's gunicorn (bench/README.md, "FastAPI reference").
FASTAPI_WORKERS = os.environ.get("BENCH_FASTAPI_WORKERS", "2")
APP_WORKERS = os.environ.get("BENCH_APP_WORKERS", "2")
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"


def log(message):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def run(args, env, **kwargs):
    return subprocess.run(args, env=env, cwd=ROOT, check=True, text=True, **kwargs)


def manage(env, *args, capture=False):
    result = run([PYTHON, "manage.py", *args], env, capture_output=capture)
    return result.stdout.strip() if capture else None


def psql(admin_url, sql):
    run(["psql", admin_url, "-qc", sql], os.environ.copy())


def gunicorn_args(port, target):
    # As deployed: the project's gunicorn.conf.py when it exists, 2 worker processes.
    # Its logging (the app's JSON access log included) goes to bench/results/server-<port>.log.
    conf = ["-c", "gunicorn.conf.py"] if (ROOT / "gunicorn.conf.py").exists() else []
    return [PYTHON, "-m", "gunicorn", *conf, "--workers", APP_WORKERS, "--bind", f"127.0.0.1:{port}", target]


def fastapi_python():
    """bench/.venv-fastapi's python, the venv made and bench/requirements-fastapi.txt installed
    into it on first use (and again whenever that file changes)."""
    python = FASTAPI_VENV / "bin" / "python"
    stamp = FASTAPI_VENV / "requirements.sha256"
    wanted = hashlib.sha256(FASTAPI_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    log(f"installing {FASTAPI_REQUIREMENTS.relative_to(ROOT)} into {FASTAPI_VENV.relative_to(ROOT)}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FASTAPI_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(FASTAPI_REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted)
    return str(python)


def uvicorn_args(python, port):
    # Tuned as bench/README.md ("FastAPI reference") says: uvloop, httptools, no access log.
    return [
        python,
        "-m",
        "uvicorn",
        "--app-dir",
        str(BENCH / "fastapi_ref"),
        "app:app",
        "--workers",
        FASTAPI_WORKERS,
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def normalised(body, port):
    """A JSON answer with what may differ between the servers taken out of its links: the
    server's own address (each is reached on its own port), and the order of the query
    parameters (DRF sorts them, the floor keeps the request's order: the same link)."""

    def link(value):
        if isinstance(value, dict):
            return {key: link(item) for key, item in value.items()}
        if isinstance(value, list):
            return [link(item) for item in value]
        if isinstance(value, str) and value.startswith(server):
            parts = urlsplit(value)
            return urlunsplit(parts._replace(netloc="SERVER", query=urlencode(sorted(parse_qsl(parts.query)))))
        return value

    server = f"https://127.0.0.1:{port}/"
    return link(json.loads(body))


# The answers compared before measuring: whole bodies, parsed, so only the order of an
# object's keys and the port in the links may differ between the servers.
SAME_ANSWERS = [
    "/api/widgets/?limit=50&offset=100",
    "/api/widgets/?search=brass&low_stock=true&limit=50",
    "/api/widgets/?limit=50&start={min_id}",
    "/api/widgets/{min_id}/",
    "/api/widgets/{max_id}/",
]


def check_same_answers(ports, env):
    """Abort unless every server answers the same JSON to the same read requests (writes
    change the data; their JSON is built by the same code paths as these: bench/README.md)."""
    for path in SAME_ANSWERS:
        path = path.format(min_id=env["MIN_ID"], max_id=env["MAX_ID"])
        answers = {}
        for name, port in ports.items():
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}",
                headers={"X-Forwarded-Proto": "https", "Authorization": f"Token {env['TOKEN']}"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answers[name] = normalised(response.read(), port)
        reference = answers["floor"]
        for name, answer in answers.items():
            if answer != reference:
                (OUT / f"differs-{name}.json").write_text(json.dumps(answer, indent=1, sort_keys=True))
                (OUT / "differs-floor.json").write_text(json.dumps(reference, indent=1, sort_keys=True))
                raise SystemExit(
                    f"{name} and the floor answer GET {path} differently: see {OUT}/differs-{name}.json "
                    f"and {OUT}/differs-floor.json"
                )
    log(f"same JSON from {', '.join(ports)} for {len(SAME_ANSWERS)} requests")


def port_is_free(port):
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_until_up(port, server):
    for _ in range(100):
        if server.poll() is not None:
            raise RuntimeError(f"the server for port {port} exited; see {OUT}/server-{port}.log")
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/widgets/", headers={"X-Forwarded-Proto": "https"}
            )
            urllib.request.urlopen(request, timeout=2)
        except urllib.error.HTTPError:
            return  # 401 without a token: it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not start")


def workers_of(master):
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    # uvicorn's workers are spawned by multiprocessing, whose resource tracker is a child too.
    return [int(pid) for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def server_cpu_us(master):
    """CPU time (user + system, µs) of a server so far: the master, its workers and the
    workers it has already reaped (gunicorn recycles them), which the kernel adds to the
    master's children's times."""
    fields = Path(f"/proc/{master}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        try:
            ticks += sum(int(value) for value in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
        except OSError:  # exited since: its times are in the master's cutime/cstime once reaped
            pass
    return ticks * TICK_US


def machine_cpu_us():
    """CPU time the whole machine spent busy (user, nice, system, irq, softirq; not idle,
    waiting or stolen by the host), µs: the server, PostgreSQL, Redis and wrk together."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) * TICK_US


def peak_memory_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory(threading.Thread):
    """Samples the workers' VmHWM every second: gunicorn recycles workers (max_requests),
    so reading them once at the end would miss the ones already gone."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.servers, self.peaks, self.stopped = servers, {name: [] for name in servers}, threading.Event()

    def run(self):
        while not self.stopped.wait(1.0):
            self.sample()

    def sample(self):
        for name, server in self.servers.items():
            try:
                current = sorted((peak_memory_mb(pid) for pid in workers_of(server.pid)), reverse=True)
            except OSError:
                continue
            peaks = self.peaks[name]
            for index, value in enumerate(current):
                if index >= len(peaks):
                    peaks.append(value)
                peaks[index] = max(peaks[index], value)

    def result(self):
        self.stopped.set()
        self.sample()
        return {name: [round(value, 1) for value in peaks] for name, peaks in self.peaks.items()}


def wrk(port, scenario, seconds, connections, env):
    args = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-H",
        "X-Forwarded-Proto: https",  # as the load balancer sends it
        "-s",
        str(BENCH / "wrk" / "scenario.lua"),
        f"http://127.0.0.1:{port}",
    ]
    output = run(args, {**env, "SCENARIO": scenario}, capture_output=True).stdout
    result = json.loads(re.search(r"^RESULT (.*)$", output, re.M).group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10k widgets, 1 repetition, 5 s runs")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument("--no-fastapi", action="store_true", help="do not serve and measure the FastAPI reference")
    parser.add_argument("--label", default="", help="a note for the results, e.g. the change measured")
    parser.add_argument(
        "--replica",
        action="store_true",
        help="instead: list and retrieve with one read replica against the primary alone (bench/replicas.py)",
    )
    options = parser.parse_args()
    if options.quick:
        options.sizes, options.reps, options.seconds = "10000", 1, 5
    if shutil.which("wrk") is None:
        log("wrk is missing: installing Debian's package")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
    if options.replica:
        import replicas

        if options.sizes == parser.get_default("sizes"):
            options.sizes = "10000"
        return replicas.main(options)
    sizes = [int(s) for s in options.sizes.split(",")]
    fastapi = None if options.no_fastapi else fastapi_python()
    scenarios = options.scenarios.split(",")
    OUT.mkdir(exist_ok=True)

    db_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/widgets_bench")
    db_name = db_url.rsplit("/", 1)[1]
    admin_url = db_url.rsplit("/", 1)[0] + "/postgres"
    env = {
        **os.environ,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ENV_FILE": "",  # production settings, never a developer's local .env
        "DATABASE_URL": db_url,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "PYTHONPATH": str(ROOT),
        # The throttles stay in the request path (their cache round trips are measured),
        # with a user limit high enough that one benchmark user is never refused.
        "DJANGO_THROTTLE_USER": os.environ.get("BENCH_THROTTLE_USER", "100000000/min"),
    }
    env.pop("DJANGO_DEBUG", None)
    started = datetime.datetime.now(datetime.UTC)
    load_before = loadavg()

    log(f"recreating database {db_name}")
    psql(admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    psql(admin_url, f'CREATE DATABASE "{db_name}"')
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
    token = manage(env, "issue_token", "bench", "--name", "bench", "--expires-days", "0", capture=True)
    env["TOKEN"] = token

    results = {"sizes": {}, "options": vars(options)}
    seeded = 0
    for size in sizes:
        log(f"seeding to {size} widgets")
        t0 = time.monotonic()
        manage(env, "seed_widgets", "--count", str(size - seeded), "--days", "0", "-v0")
        seeded = size
        psql(db_url, "VACUUM ANALYZE")
        seed_seconds = time.monotonic() - t0
        ids = (
            run(["psql", db_url, "-Atc", "SELECT min(id), max(id) FROM widgets_widget"], env, capture_output=True)
            .stdout.strip()
            .split("|")
        )
        env["MIN_ID"], env["MAX_ID"] = ids
        adjust_ids = OUT / "adjust_ids.txt"
        adjust_ids.write_text(
            run(
                [
                    "psql",
                    db_url,
                    "-Atc",
                    "SELECT id FROM widgets_widget WHERE stock >= 20 ORDER BY random() LIMIT 5000",
                ],
                env,
                capture_output=True,
            ).stdout
        )
        env["ADJUST_IDS"] = str(adjust_ids)
        queries = json.loads(run([PYTHON, "bench/queries.py", token], env, capture_output=True).stdout.splitlines()[-1])

        commands = {
            "app": gunicorn_args(APP_PORT, "config.wsgi"),
            "floor": gunicorn_args(FLOOR_PORT, "bench.floor:app"),
        }
        ports = {"app": APP_PORT, "floor": FLOOR_PORT}
        if fastapi:
            commands["fastapi"], ports["fastapi"] = uvicorn_args(fastapi, FASTAPI_PORT), FASTAPI_PORT
        for port in ports.values():
            if not port_is_free(port):
                raise SystemExit(f"port {port} is in use: stop whatever listens there first")
        server_log = {port: open(OUT / f"server-{port}.log", "w") for port in ports.values()}
        servers = {
            name: subprocess.Popen(commands[name], env=env, cwd=ROOT, stdout=server_log[port], stderr=subprocess.STDOUT)
            for name, port in ports.items()
        }
        try:
            for name, port in ports.items():
                wait_until_up(port, servers[name])
            check_same_answers(ports, env)
            sampler = PeakMemory(servers)
            sampler.start()
            log(f"{size}: warming up")
            for scenario in scenarios:
                for name in ports:
                    wrk(ports[name], scenario, 2, options.connections, env)
            runs = {s: {name: [] for name in ports} for s in scenarios}
            for rep in range(options.reps):
                for scenario in scenarios:
                    # Alternate who goes first, so neither always meets a warmer machine.
                    order = list(ports) if rep % 2 == 0 else list(reversed(ports))
                    for name in order:
                        server_before, machine_before = server_cpu_us(servers[name].pid), machine_cpu_us()
                        result = wrk(ports[name], scenario, options.seconds, options.connections, env)
                        # CPU per request moves far less than req/s when the host lends the
                        # machine's cores elsewhere (steal time): the better A/B measure.
                        served = result["requests"]
                        result["server_cpu_us"] = (server_cpu_us(servers[name].pid) - server_before) / served
                        result["machine_cpu_us"] = (machine_cpu_us() - machine_before) / served
                        runs[scenario][name].append(result)
                        log(
                            f"{size} rep {rep + 1} {scenario:9} {name:7} {result['rps']:8.0f} req/s "
                            f"p50 {result['p50_us'] / 1000:.1f} ms p99 {result['p99_us'] / 1000:.1f} ms "
                            f"errors {result['errors'] + result['non2xx']} CPU/request: server "
                            f"{result['server_cpu_us']:.0f} us, machine {result['machine_cpu_us']:.0f} us"
                        )
            memory = sampler.result()
        finally:
            for server in servers.values():
                server.terminate()
            for server in servers.values():
                server.wait(timeout=30)
        results["sizes"][size] = {
            "runs": runs,
            "memory_mb": memory,
            "queries": queries,
            "seed_seconds": round(seed_seconds, 1),
        }

    results["load"] = {"before": load_before, "after": loadavg()}
    finished = datetime.datetime.now(datetime.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (OUT / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    report = render(results, options, started, finished, " ".join(sys.argv))
    (OUT / f"{stamp}.md").write_text(report)
    print(report)
    if not options.no_write:
        path = BENCH / "RESULTS.md"
        text = path.read_text() if path.exists() else f"# Benchmark results\n\n{MARK_START}\n{MARK_END}\n"
        head, rest = text.split(MARK_START, 1)
        path.write_text(f"{head}{MARK_START}\n{report}\n{MARK_END}{rest.split(MARK_END, 1)[1]}")
        log(f"wrote {path}")
    psql(admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)') if os.environ.get("BENCH_DROP") else None


def median(values):
    return statistics.median(values) if values else float("nan")


def version(args):
    try:
        return subprocess.run(args, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def render(results, options, started, finished, command):
    import django
    import rest_framework

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    lines = [
        f"Run {started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC{' — ' + options.label if options.label else ''}",
        "",
        f"- Command: `{command}` ({options.reps} repetition(s) of {options.seconds} s per scenario and server, "
        f"{options.connections} connections, wrk -t2; medians reported)",
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), {platform.platform()}; load average before "
        f"{' '.join(results['load']['before'])}, after {' '.join(results['load']['after'])} "
        "(the machine is shared with other engineers running tests)",
        f"- Versions: Python {platform.python_version()}, Django {django.__version__}, DRF "
        f"{rest_framework.__version__}, "
        f"{version(['psql', '--version'])}, {version(['wrk', '-v'])}",
        "",
        "| widgets | scenario | app req/s | floor req/s | app / floor | FastAPI req/s | app / FastAPI | "
        "app p50 ms | app p99 ms | p99/p50 | floor p50 ms | FastAPI p50 ms | errors app/floor/FastAPI | SQL/request |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for size, data in results["sizes"].items():
        for scenario, runs in data["runs"].items():
            app, floor, fastapi = runs["app"], runs["floor"], runs.get("fastapi", [])
            app_rps, floor_rps = median([r["rps"] for r in app]), median([r["rps"] for r in floor])
            p50, p99 = median([r["p50_us"] for r in app]) / 1000, median([r["p99_us"] for r in app]) / 1000
            errors = "/".join(str(sum(r["errors"] + r["non2xx"] for r in rs)) for rs in (app, floor, fastapi) if rs)
            fastapi_rps, fastapi_ratio, fastapi_p50 = "—", "—", "—"  # not measured: --no-fastapi
            if fastapi:
                rps = median([r["rps"] for r in fastapi])
                fastapi_rps, fastapi_ratio = f"{rps:.0f}", f"{app_rps / rps:.2f}x"
                fastapi_p50 = f"{median([r['p50_us'] for r in fastapi]) / 1000:.1f}"
            lines.append(
                f"| {int(size):,} | {scenario} | {app_rps:.0f} | {floor_rps:.0f} | {app_rps / floor_rps:.2f}x | "
                f"{fastapi_rps} | {fastapi_ratio} | {p50:.1f} | {p99:.1f} | {p99 / p50:.1f} | "
                f"{median([r['p50_us'] for r in floor]) / 1000:.1f} | {fastapi_p50} | {errors} | "
                f"{data['queries'].get(scenario, '?')} |"
            )
    lines += [
        "",
        "CPU per request, µs (medians; the server's processes, and the whole machine: server, "
        "PostgreSQL, Redis and wrk), which moves less than req/s on a shared host:",
        "",
        "| widgets | scenario | app | floor | FastAPI | app / FastAPI | machine: app | floor | FastAPI |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, data in results["sizes"].items():
        for scenario, runs in data["runs"].items():
            server = {name: median([r["server_cpu_us"] for r in rs]) for name, rs in runs.items() if rs}
            machine = {name: median([r["machine_cpu_us"] for r in rs]) for name, rs in runs.items() if rs}
            cells = [server["app"], server["floor"], server.get("fastapi")]
            ratio = f"{server['app'] / server['fastapi']:.2f}x" if "fastapi" in server else "—"
            cells += [ratio, machine["app"], machine["floor"], machine.get("fastapi")]
            shown = ["—" if c is None else c if isinstance(c, str) else f"{c:.0f}" for c in cells]
            lines.append(f"| {int(size):,} | {scenario} | {' | '.join(shown)} |")
    lines += ["", "Peak memory per worker (VmHWM, MB) and seeding time:", ""]
    for size, data in results["sizes"].items():
        memory = data["memory_mb"]
        lines.append(
            f"- {int(size):,} widgets: app {memory['app']}, floor {memory['floor']}"
            + (f", FastAPI {memory['fastapi']}" if "fastapi" in memory else "")
            + f"; seeding to this size took {data['seed_seconds']} s"
        )
    sizes = list(results["sizes"])
    if len(sizes) > 1:
        lines += ["", f"Growth, app p50 at {int(sizes[-1]):,} / p50 at {int(sizes[0]):,}:", ""]
        first, last = results["sizes"][sizes[0]]["runs"], results["sizes"][sizes[-1]]["runs"]
        for scenario in last:
            ratio = median([r["p50_us"] for r in last[scenario]["app"]]) / median(
                [r["p50_us"] for r in first[scenario]["app"]]
            )
            lines.append(f"- {scenario}: {ratio:.2f}x")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
