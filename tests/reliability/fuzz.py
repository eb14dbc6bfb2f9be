"""Schema fuzzing: schemathesis against the real server's own /api/schema/.

Starts gunicorn (production settings) on a fresh PostgreSQL database with some data,
authenticates as a manager with a token, and runs every operation with every
schemathesis check, positive and negative data, a fixed seed and at least 100
examples per operation. Exits non-zero on any failure.

    python tests/reliability/fuzz.py [--examples 100] [--seed 8]

Environment: ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
FUZZ_DATABASE (default widgets_fuzz), FUZZ_PORT (default 8401).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import log

SEED_RESERVATIONS = """
from widgets import services
from widgets.models import Widget
for widget in Widget.objects.filter(stock__gte=2).order_by("id")[:20]:
    services.create_reservation(
        reference=f"fuzz-{widget.pk}", items=[{"widget": widget.pk, "quantity": 1}], ttl_seconds=86400
    )
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100, help="examples per operation (>= 100 in CI)")
    parser.add_argument("--seed", type=int, default=8)
    # One worker: hypothesis' lambda descriptions call ast.parse, which CPython 3.11 does not
    # make thread-safe ("AST constructor recursion depth mismatch" with several workers).
    parser.add_argument("--workers", default="1", help="schemathesis workers")
    parser.add_argument("--report-dir", default=str(harness.ROOT / "test-artifacts" / "schemathesis"))
    parser.add_argument("extra", nargs="*", help="extra schemathesis arguments (after --)")
    args = parser.parse_args()

    admin_url = os.environ.get("ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    db_name = os.environ.get("FUZZ_DATABASE", "widgets_fuzz")
    port = int(os.environ.get("FUZZ_PORT", "8401"))

    database_url = harness.recreate_database(admin_url, db_name)
    try:
        env = harness.base_env(database_url)
        tokens = harness.prepare(env, widgets=30, roles={"fuzz-manager": "manager"})
        # Some reservations (ids from 1), so that commit, release and extend meet real ones.
        harness.manage(env, "shell", "-c", SEED_RESERVATIONS)
        with harness.gunicorn(env, port, workers=2) as server:
            started = time.monotonic()
            command = [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(Path(__file__).with_name("schemathesis.toml")),
                "run",
                f"{server.url}/api/schema/",
                "--checks",
                "all",
                "--mode",
                "all",
                "--max-examples",
                str(args.examples),
                "--seed",
                str(args.seed),
                "--workers",
                args.workers,
                "--header",
                f"Authorization: Token {tokens['fuzz-manager']}",
                "--header",
                "X-Forwarded-Proto: https",
                "--request-timeout",
                "10",
                "--report",
                "junit",
                "--report-dir",
                args.report_dir,
                *args.extra,
            ]
            log(f"schemathesis: {args.examples} examples per operation, seed {args.seed}")
            result = subprocess.run(command, cwd=harness.ROOT)
            log(f"schemathesis finished in {time.monotonic() - started:.0f} s with exit code {result.returncode}")
            if "Traceback" in server.log():
                log("server log has tracebacks:\n" + server.log()[-4000:])
                return 1
            return result.returncode
    finally:
        harness.drop_database(admin_url, db_name)


if __name__ == "__main__":
    sys.exit(main())
