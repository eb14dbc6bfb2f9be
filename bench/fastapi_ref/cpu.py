"""CPU (or instructions) per request of the FastAPI reference, in one process: how its tuning was compared.

Calls the ASGI app directly on a uvloop loop (no uvicorn, no sockets, no wrk), one request
at a time, with the wrk scenarios' requests, against the database a `bench/run.py` run leaves
behind, and prints the CPU time per request (``time.process_time``, the least disturbed of 5
runs) or, with ``--instructions``, valgrind's instruction count per request (the same from run
to run whatever else the machine does: 10 and then 110 requests, the difference / 100).
Configure the app with its environment (FASTAPI_SERIALIZER=pydantic, ...). Run with the
reference's own venv; TOKEN is a token of the benchmark database under DJANGO_SECRET_KEY:

    TOKEN=... DJANGO_SECRET_KEY=... DATABASE_URL=postgres://.../widgets_bench \\
        bench/.venv-fastapi/bin/python bench/fastapi_ref/cpu.py [--instructions] [--scenarios list,retrieve]
"""

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time

import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def request_maker(ids: list[int]):
    counter = itertools.count()

    def adjust():
        n = next(counter)
        delta, reason = (1, "received") if n % 2 else (-1, "sold")
        body = {"delta": delta, "reason": reason, "note": "bench"}
        return "POST", f"/api/widgets/{ids[n // 2 % len(ids)]}/adjust/", "", body

    def batch():
        n = next(counter)
        delta, reason = (1, "received") if n % 2 else (-1, "sold")
        first = (n // 2 * 10) % (len(ids) - 10)
        items = [{"widget": pk, "delta": delta, "reason": reason, "note": "bench"} for pk in ids[first : first + 10]]
        return "POST", "/api/adjustments/", "", {"items": items}

    return {
        "list": lambda: ("GET", "/api/widgets/", f"limit=50&offset={next(counter) % 20 * 50}", None),
        "filtered": lambda: ("GET", "/api/widgets/", "search=brass&low_stock=true&limit=50", None),
        "retrieve": lambda: ("GET", f"/api/widgets/{ids[next(counter) % len(ids)]}/", "", None),
        "adjust": adjust,
        "batch": batch,
        "keyset": lambda: ("GET", "/api/widgets/", f"limit=50&start={ids[next(counter) % len(ids)]}", None),
    }


async def call(app, token: str, method: str, path: str, query: str, body) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    headers = [(b"host", b"127.0.0.1:8603"), (b"authorization", f"Token {token}".encode())]
    if body is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8603),
    }
    sent, chunks = [], []

    async def receive():
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent.append(message["status"])
        else:
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    if not 200 <= sent[0] < 300:
        raise SystemExit(f"{method} {path}?{query}: {sent[0]} {b''.join(chunks)[:300]!r}")
    return b"".join(chunks)


async def serve(name: str, count: int) -> None:
    """Warm up, then serve COUNT requests of one scenario: the body of an --instructions run."""
    import app as reference

    ids = await adjustable_ids(reference)
    make = request_maker(ids)[name]
    token = os.environ["TOKEN"]
    for _ in range(30):
        await call(reference.app, token, *make())
    for request in [make() for _ in range(count)]:
        await call(reference.app, token, *request)


async def adjustable_ids(reference) -> list[int]:
    from sqlalchemy import text

    async with reference.engine.connect() as conn:
        rows = await conn.execute(text("SELECT id FROM widgets_widget WHERE stock >= 20 ORDER BY id LIMIT 200"))
        return [row[0] for row in rows]


async def cpu_per_request(names: list[str], requests: int) -> None:
    import app as reference

    ids = await adjustable_ids(reference)
    makers = request_maker(ids)
    token = os.environ["TOKEN"]
    print(f"{'scenario':10} {'FastAPI us':>10}", flush=True)
    for name in names:
        make = makers[name]
        for _ in range(20):
            await call(reference.app, token, *make())
        samples = []
        for _ in range(5):
            batch = [make() for _ in range(requests)]
            started = time.process_time()
            for request in batch:
                await call(reference.app, token, *request)
            samples.append((time.process_time() - started) / requests * 1e6)
        print(f"{name:10} {min(samples):10.0f}", flush=True)


def count_instructions(names: list[str]) -> None:
    def run(name: str, count: int) -> int:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        command += [sys.executable, __file__, "--serve", name, str(count)]
        stderr = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
        match = re.search(r"Collected : (\d+)", stderr)
        if not match:
            raise SystemExit(f"callgrind run failed:\n{stderr[-2000:]}")
        return int(match.group(1))

    print(f"{'scenario':10} {'FastAPI instr':>14}", flush=True)
    for name in names:
        print(f"{name:10} {(run(name, 110) - run(name, 10)) / 100:14,.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--scenarios", default="list,filtered,retrieve,adjust,batch,keyset")
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    parser.add_argument("--serve", nargs=2, metavar=("SCENARIO", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        return uvloop.run(serve(options.serve[0], int(options.serve[1])))
    if options.instructions:
        return count_instructions(options.scenarios.split(","))
    uvloop.run(cpu_per_request(options.scenarios.split(","), options.requests))


if __name__ == "__main__":
    main()
