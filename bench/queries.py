"""SQL queries per request for each benchmark scenario, counted inside Django.

Run with the app's settings against the benchmark database:
    python bench/queries.py <raw token> [--sql]
Prints one JSON object: {scenario: number of queries}. The first request of each
scenario warms caches (as under load); the second is counted.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from widgets.models import Widget  # noqa: E402


def main():
    token, show_sql = sys.argv[1], "--sql" in sys.argv
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_ACCEPT="application/json", HTTP_X_FORWARDED_PROTO="https")
    some_id = Widget.objects.order_by("id").values_list("id", flat=True)[500]
    top_id = Widget.objects.order_by("-id").values_list("id", flat=True)[0]
    batch_ids = list(Widget.objects.filter(stock__gte=20).order_by("id").values_list("id", flat=True)[:10])

    def batch(delta):
        return [{"widget": pk, "delta": delta, "reason": "received" if delta > 0 else "sold"} for pk in batch_ids]

    scenarios = {
        "list": lambda: client.get("/api/widgets/?limit=50&offset=500"),
        "filtered": lambda: client.get("/api/widgets/?search=brass&low_stock=true&limit=50"),
        "retrieve": lambda: client.get(f"/api/widgets/{some_id}/"),
        # +1 then -1 on the same widget: the stock ends as seeded.
        "adjust": lambda: client.post(
            f"/api/widgets/{some_id}/adjust/", {"delta": 1, "reason": "received"}, content_type="application/json"
        ),
        "adjust_back": lambda: client.post(
            f"/api/widgets/{some_id}/adjust/", {"delta": -1, "reason": "sold"}, content_type="application/json"
        ),
        "batch": lambda: client.post("/api/adjustments/", {"items": batch(1)}, content_type="application/json"),
        "batch_back": lambda: client.post("/api/adjustments/", {"items": batch(-1)}, content_type="application/json"),
        "keyset": lambda: client.get(f"/api/widgets/?limit=50&start={top_id // 2}"),
    }
    counts = {}
    for name, request in scenarios.items():
        if name not in ("adjust_back", "batch_back"):
            request()  # warm-up
        with CaptureQueriesContext(connection) as captured:
            response = request()
        assert response.status_code in (200, 201), (name, response.status_code, response.content[:300])
        counts[name] = len(captured)
        if show_sql:
            print(f"--- {name}", file=sys.stderr)
            for query in captured:
                print("   ", query["sql"][:400], file=sys.stderr)

    for undo in ("adjust_back", "batch_back"):
        scenarios[undo]()
        counts.pop(undo)
    counts["reserve"] = "/".join(map(str, reserve_cycle(client, some_id)))
    print(json.dumps(counts))


def reserve_cycle(client, widget_id) -> list[int]:
    """The reserve scenario's queries: reserve 1 unit, commit it, receive 1 back (the stock
    ends as seeded). Run twice, the first to warm up; returns the second's three counts."""

    def counted_post(url, body) -> tuple[int, dict]:
        with CaptureQueriesContext(connection) as captured:
            response = client.post(url, body, content_type="application/json")
        assert response.status_code == 201, (response.status_code, response.content[:300])
        return len(captured), response.json()

    for _ in range(2):
        reserve, reservation = counted_post(
            "/api/reservations/", {"reference": "bench", "items": [{"widget": widget_id, "quantity": 1}]}
        )
        commit, _ = counted_post(f"/api/reservations/{reservation['id']}/commit/", {})
        receive, _ = counted_post(f"/api/widgets/{widget_id}/adjust/", {"delta": 1, "reason": "received"})
    return [reserve, commit, receive]


if __name__ == "__main__":
    main()
