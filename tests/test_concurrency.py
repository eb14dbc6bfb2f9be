"""Concurrent adjustments on PostgreSQL: no lost update, no oversell, no error."""
import random
import threading

import pytest
from django.db import connection

from tests.conftest import make_user, postgres_only, token_client
from widgets.models import StockMovement, Widget

pytestmark = [postgres_only, pytest.mark.django_db(transaction=True)]

THREADS = 20
ADJUSTMENTS_PER_THREAD = 10


def test_parallel_adjustments_keep_stock_equal_to_the_ledger(transactional_db):
    creator = token_client(make_user("manager"))
    widget_ids = [
        creator.post("/api/widgets/", {"name": f"Hot {n}", "stock": 5}, format="json").json()["id"] for n in range(3)
    ]
    clients = [token_client(make_user("clerk")) for _ in range(THREADS)]
    statuses, errors = [], []
    start = threading.Barrier(THREADS)

    def worker(client, seed):
        rng = random.Random(seed)
        try:
            start.wait()
            for _ in range(ADJUSTMENTS_PER_THREAD):
                delta = rng.choice([-3, -2, -1, 1, 2])
                response = client.post(
                    f"/api/widgets/{rng.choice(widget_ids)}/adjust/",
                    {"delta": delta, "reason": "sold" if delta < 0 else "received"},
                    format="json",
                )
                statuses.append(response.status_code)
                if response.status_code == 409:
                    assert response.json()["code"] == "insufficient_stock"
        except Exception as exc:  # collected, so the main thread reports it
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(c, n)) for n, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(statuses) == THREADS * ADJUSTMENTS_PER_THREAD
    assert set(statuses) <= {201, 409}
    assert statuses.count(201) > THREADS and statuses.count(409) > 0  # both outcomes exercised
    for widget in Widget.objects.filter(pk__in=widget_ids):
        movements = list(StockMovement.objects.filter(widget=widget).order_by("id"))
        assert widget.stock == sum(m.delta for m in movements) >= 0
        assert all(m.stock_after >= 0 for m in movements)
        assert movements[-1].stock_after == widget.stock
        # Each movement starts from the previous one's result: nothing was lost in between.
        for before, after in zip(movements, movements[1:]):
            assert after.stock_after == before.stock_after + after.delta
    assert StockMovement.objects.filter(widget_id__in=widget_ids).count() == 3 + statuses.count(201)
