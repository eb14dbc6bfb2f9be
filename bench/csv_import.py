"""Time CSV import/export of N widgets against a reference run (seed_widgets, plain bulk
inserts of the same number of widgets) on the database in DATABASE_URL.

    DATABASE_URL=postgres://... DJANGO_SECRET_KEY=x python bench/csv_import.py --rows 100000

Use a scratch database: it migrates it and adds widgets (SKUs B-* and S9-*).
Prints seconds and the ratio of each step to the reference.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from widgets.models import Widget  # noqa: E402


def timed(label, results, func):
    start = time.perf_counter()
    func()
    results[label] = time.perf_counter() - start
    print(f"{label:<40} {results[label]:8.2f} s", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    rows = args.rows
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "widgets.csv"

        def write_file(active, extra_stock):
            with open(path, "w", newline="") as out:
                out.write("sku,name,description,category,price,reorder_level,is_active,stock\n")
                for n in range(rows):
                    out.write(
                        f"B-{n:07d},Bench widget {n},Made for the benchmark,,{n % 500}.25,{n % 7},"
                        f"{active},{n % 40 + extra_stock}\n"
                    )

        write_file("true", 0)
        timed(
            f"reference: seed_widgets --count {rows} --days 0",
            results,
            lambda: call_command("seed_widgets", count=rows, seed=9, days=0, verbosity=0),
        )
        timed(f"import {rows} new rows", results, lambda: call_command("import_widgets", str(path), verbosity=0))
        timed("re-import, nothing changes", results, lambda: call_command("import_widgets", str(path), verbosity=0))
        write_file("false", 3)
        # The file has no version column: its stock corrections are applied by explicit choice.
        timed(
            f"import {rows} updates + stock corrections",
            results,
            lambda: call_command("import_widgets", str(path), "--stock-corrections", verbosity=0),
        )
        client = Client(HTTP_HOST="localhost")
        client.force_login(
            __import__("django.contrib.auth.models", fromlist=["User"]).User.objects.get_or_create(
                username="bench", defaults={"is_superuser": True, "is_staff": True}
            )[0]
        )
        exported = {}
        timed(
            f"export all {Widget.objects.count()} widgets as CSV",
            results,
            lambda: exported.setdefault(
                "n",
                sum(
                    chunk.count(b"\n")
                    for chunk in client.get("/api/widgets/?format=csv", secure=True).streaming_content
                ),
            ),
        )
        print(f"(exported {exported['n']} lines)")
    reference = results[f"reference: seed_widgets --count {rows} --days 0"]
    for label, seconds in results.items():
        print(f"ratio {label:<34} {seconds / reference:6.2f}")


if __name__ == "__main__":
    main()
