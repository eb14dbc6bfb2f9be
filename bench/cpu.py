"""CPU per request, in one process: the app's WSGI handler against the floor's.

Calls both WSGI callables directly (no gunicorn, no sockets, no wrk), with the same
requests as the wrk scenarios, and reports the CPU time (``time.process_time``) each
spends per request, which depends far less on what else the machine runs than req/s.
``--profile SCENARIO`` prints the app's cProfile for that scenario instead.

CPU time still moves by 10-20% from run to run on a shared virtual machine.
``--instructions`` counts instructions instead, with valgrind's callgrind, which are the
same from run to run whatever else the machine does: each scenario is served 10 and then
110 times in a process under callgrind, and the difference divided by 100 is reported
(about 30-40 s per scenario and server, two at a time).

Uses the benchmark database that ``bench/run.py`` leaves behind (run it once, e.g.
``make bench-quick``) and the production settings the benchmark serves:
    python bench/cpu.py [--requests 300] [--profile retrieve] [--scenarios list,retrieve]

``--app-only`` measures the app without the floor: to compare two trees, run each tree's
code with this file against the same database (copy it into the other tree's bench/).
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault(
    "DATABASE_URL", os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/widgets_bench")
)
os.environ.setdefault("REDIS_URL", os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6"))
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
os.environ.setdefault("DJANGO_THROTTLE_USER", "100000000/min")
os.environ.pop("DJANGO_DEBUG", None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# The access log (one JSON line per request, on stdout as deployed) is written, to nowhere;
# the results go to the real stdout.
results = sys.stdout
sys.stdout = open(os.devnull, "w")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402

from bench import floor  # noqa: E402
from widgets.models import ApiToken, Widget  # noqa: E402


def environ(method, path, token, body=b""):
    path, _, query = path.partition("?")
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8601",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8601",
        "HTTP_ACCEPT": "application/json",
        "HTTP_AUTHORIZATION": f"Token {token}",
        "HTTP_X_FORWARDED_PROTO": "https",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        env["CONTENT_TYPE"], env["CONTENT_LENGTH"] = "application/json", str(len(body))
    return env


def scenarios(token):
    ids = list(Widget.objects.filter(stock__gte=20).order_by("id").values_list("id", flat=True)[:200])
    top = Widget.objects.order_by("-id").values_list("id", flat=True)[0]
    step = {"n": 0}

    def next_id():
        step["n"] += 1
        return ids[step["n"] % len(ids)]

    def adjust():
        pk, n = next_id(), step["n"]
        delta, reason = (1, "received") if n % 2 else (-1, "sold")
        body = json.dumps({"delta": delta, "reason": reason, "note": "bench"}).encode()
        return environ("POST", f"/api/widgets/{pk}/adjust/", token, body)

    def batch():
        step["n"] += 1
        n = step["n"]
        delta, reason = (1, "received") if n % 2 else (-1, "sold")
        first = (n // 2 * 10) % (len(ids) - 10)  # a +1 and then a -1 on the same ten widgets
        items = [{"widget": pk, "delta": delta, "reason": reason, "note": "bench"} for pk in ids[first : first + 10]]
        return environ("POST", "/api/adjustments/", token, json.dumps({"items": items}).encode())

    return {
        "batch": batch,
        "list": lambda: environ("GET", f"/api/widgets/?limit=50&offset={next_id() % 20 * 50}", token),
        "filtered": lambda: environ("GET", "/api/widgets/?search=brass&low_stock=true&limit=50", token),
        "retrieve": lambda: environ("GET", f"/api/widgets/{next_id()}/", token),
        "adjust": adjust,
        "list1": lambda: environ("GET", f"/api/widgets/?limit=1&offset={next_id() % 20 * 50}", token),
        "keyset": lambda: environ("GET", f"/api/widgets/?limit=50&start={top // 2}", token),
    }


def call(app, env):
    status = []
    body = b"".join(app(env, lambda s, h, exc_info=None: status.append(s)))
    if not status[0].startswith("2"):
        raise SystemExit(f"{env['REQUEST_METHOD']} {env['PATH_INFO']}: {status[0]} {body[:300]!r}")
    return body


def cpu_per_request(app, make_env, requests):
    for _ in range(20):  # warm caches, connections and the token cache
        call(app, make_env())
    samples = []
    for _ in range(5):
        envs = [make_env() for _ in range(requests)]
        started = time.process_time()
        for env in envs:
            call(app, env)
        samples.append((time.process_time() - started) / requests * 1e6)
    return min(samples)  # the least disturbed of five runs


def count_instructions(names, servers=("app", "floor")):
    def instructions(name, server, count):
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--serve",
            name,
            server,
            str(count),
        ]
        # Under callgrind a request takes ~50x longer, so the 5 s token cache would expire every
        # few dozen requests instead of every few thousand: keep it for the whole run.
        env = {**os.environ, "DJANGO_TOKEN_CACHE_SECONDS": "3600"}
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    def collected(process):
        stderr = process.communicate()[1]
        match = re.search(r"Collected : (\d+)", stderr)
        if process.returncode or not match:
            raise SystemExit(f"callgrind run failed:\n{stderr[-2000:]}")
        return int(match.group(1))

    print(f"{'scenario':10} {'app instr':>11} {'floor instr':>12} {'ratio':>6}", file=results, flush=True)
    for name in names:
        per_request = {}
        for server in servers:
            few, many = instructions(name, server, 10), instructions(name, server, 110)
            per_request[server] = (collected(many) - collected(few)) / 100
        app_n, floor_n = per_request["app"], per_request.get("floor")
        if floor_n is None:  # --app-only
            print(f"{name:10} {app_n:11,.0f}", file=results, flush=True)
            continue
        print(f"{name:10} {app_n:11,.0f} {floor_n:12,.0f} {floor_n / app_n:5.2f}x", file=results, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--scenarios", default="list,filtered,retrieve,adjust,keyset")
    parser.add_argument("--profile", metavar="SCENARIO", help="print the app's cProfile for this scenario")
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    parser.add_argument(
        "--app-only", action="store_true", help="measure the app alone, not the floor (to compare two trees)"
    )
    parser.add_argument("--serve", nargs=3, metavar=("SCENARIO", "SERVER", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.instructions:
        servers = ("app",) if options.app_only else ("app", "floor")
        return count_instructions(options.scenarios.split(","), servers)

    user, _ = User.objects.get_or_create(username="bench-profile")
    user.groups.add(*Group.objects.filter(name="clerk"))
    _, token = ApiToken.objects.issue(user=user, name="profile")
    app = WSGIHandler()
    made = scenarios(token)

    if options.serve:  # one process of --instructions: serve N requests, after a warm-up
        name, server, count = options.serve
        served, make_env = app if server == "app" else floor.app, made[name]
        for _ in range(30):
            call(served, make_env())
        for env in [make_env() for _ in range(int(count))]:
            call(served, env)
        return

    if options.profile:
        make_env = made[options.profile]
        for _ in range(20):
            call(app, make_env())
        envs = [make_env() for _ in range(options.requests)]
        profiler = cProfile.Profile(time.process_time)  # CPU, not time spent waiting for PostgreSQL
        profiler.enable()
        for env in envs:
            call(app, env)
        profiler.disable()
        pstats.Stats(profiler, stream=results).strip_dirs().sort_stats(options.sort).print_stats(options.limit)
        return

    print(f"{'scenario':10} {'app us':>8} {'floor us':>9} {'ratio':>6}", file=results)
    for name in options.scenarios.split(","):
        app_us = cpu_per_request(app, made[name], options.requests)
        if options.app_only:
            print(f"{name:10} {app_us:8.0f}", file=results, flush=True)
            continue
        floor_us = cpu_per_request(floor.app, made[name], options.requests)
        print(f"{name:10} {app_us:8.0f} {floor_us:9.0f} {floor_us / app_us:5.2f}x", file=results, flush=True)


if __name__ == "__main__":
    main()
