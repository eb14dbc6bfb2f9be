"""The ledger invariant after a mixed run of creates, adjustments and refused adjustments."""

import pytest
from django.core.management import call_command

from widgets.models import StockMovement, Widget

pytestmark = pytest.mark.django_db


def test_stock_equals_ledger_after_mixed_operations(manager, clerk, create_widget):
    a = create_widget(stock=10)
    b = create_widget()
    c = create_widget(stock=3)
    steps = [
        (a, -4, 201),
        (b, 5, 201),
        (c, -5, 409),
        (a, -7, 409),
        (b, -5, 201),
        (c, 2, 201),
        (a, -6, 201),
        (b, -1, 409),
        (c, -5, 201),
        (a, 1, 201),
    ]
    for widget, delta, status in steps:
        response = clerk.post(
            f"/api/widgets/{widget['id']}/adjust/", {"delta": delta, "reason": "correction"}, format="json"
        )
        assert response.status_code == status, (widget["id"], delta, response.content)
    manager.patch(f"/api/widgets/{a['id']}/", {"name": "Renamed", "stock": 50}, format="json")  # refused: 400
    manager.patch(f"/api/widgets/{b['id']}/", {"is_active": False}, format="json")

    stocks = {w["id"]: w["stock"] for w in manager.get("/api/widgets/").json()["results"]}
    assert stocks == {a["id"]: 1, b["id"]: 0, c["id"]: 0}
    for widget_id, stock in stocks.items():
        ledger = manager.get(f"/api/widgets/{widget_id}/movements/").json()["results"]
        assert sum(m["delta"] for m in ledger) == stock
        if ledger:
            assert ledger[0]["stock_after"] == stock  # newest first
    assert StockMovement.objects.count() == 2 + 7  # two initial movements + seven accepted
    assert Widget.objects.get(pk=a["id"]).name == a["name"]
    call_command("check_ledger", verbosity=0)
