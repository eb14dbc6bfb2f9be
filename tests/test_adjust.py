"""Stock changes: POST /api/widgets/{id}/adjust/ and the read-only ledger."""

import pytest

from widgets.models import StockMovement, Widget

pytestmark = pytest.mark.django_db


def adjust(client, widget_id, **body):
    return client.post(f"/api/widgets/{widget_id}/adjust/", body, format="json")


class TestAdjust:
    def test_adjustment_returns_movement_and_changes_stock(self, clerk, create_widget):
        widget = create_widget(stock=10)

        response = adjust(clerk, widget["id"], delta=-3, reason="sold", note="order 7")

        assert response.status_code == 201, response.content
        body = response.json()
        assert set(body) == {"id", "widget", "delta", "reason", "note", "stock_after", "created_by", "created_at"}
        assert (body["widget"], body["delta"], body["reason"], body["note"], body["stock_after"]) == (
            widget["id"],
            -3,
            "sold",
            "order 7",
            7,
        )
        assert body["created_by"] == clerk.user.username
        assert clerk.get(f"/api/widgets/{widget['id']}/").json()["stock"] == 7

    def test_overselling_is_409_with_available_and_writes_nothing(self, clerk, create_widget):
        widget = create_widget(stock=2)

        response = adjust(clerk, widget["id"], delta=-3, reason="sold")

        assert response.status_code == 409
        assert response.json()["code"] == "insufficient_stock"
        assert response.json()["available"] == 2
        assert Widget.objects.get(pk=widget["id"]).stock == 2
        assert StockMovement.objects.filter(widget_id=widget["id"]).count() == 1

    def test_selling_exactly_the_stock_leaves_zero(self, clerk, create_widget):
        widget = create_widget(stock=2)

        assert adjust(clerk, widget["id"], delta=-2, reason="sold").json()["stock_after"] == 0

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"delta": 0, "reason": "received"}, "delta"),
            ({"delta": 1.5, "reason": "received"}, "delta"),
            ({"delta": "ten", "reason": "received"}, "delta"),
            ({"delta": 2**40, "reason": "received"}, "delta"),
            ({"reason": "received"}, "delta"),
            ({"delta": 1, "reason": "stolen"}, "reason"),
            ({"delta": 1, "reason": "initial"}, "reason"),
            ({"delta": 1}, "reason"),
            ({"delta": 1, "reason": "received", "note": "n" * 256}, "note"),
        ],
    )
    def test_invalid_adjustment_is_400_naming_the_field(self, clerk, create_widget, body, field):
        widget = create_widget(stock=5)

        response = adjust(clerk, widget["id"], **body)

        assert response.status_code == 400
        assert field in response.json()
        assert Widget.objects.get(pk=widget["id"]).stock == 5

    def test_unknown_widget_is_404(self, clerk):
        assert adjust(clerk, 424242, delta=1, reason="received").status_code == 404

    def test_adjusting_archived_widget_is_allowed(self, clerk, manager, create_widget):
        widget = create_widget(stock=5)
        manager.patch(f"/api/widgets/{widget['id']}/", {"is_active": False}, format="json")

        assert adjust(clerk, widget["id"], delta=-5, reason="damaged").status_code == 201


class TestLedger:
    def test_movements_are_newest_first_and_filterable(self, clerk, manager, create_widget):
        first, second = create_widget(stock=10), create_widget(stock=10)
        adjust(clerk, first["id"], delta=-1, reason="sold")
        adjust(clerk, second["id"], delta=4, reason="received")
        adjust(clerk, first["id"], delta=2, reason="returned")

        everything = clerk.get("/api/movements/").json()
        assert everything["count"] == 5
        ids = [m["id"] for m in everything["results"]]
        assert ids == sorted(ids, reverse=True)

        nested = clerk.get(f"/api/widgets/{first['id']}/movements/").json()["results"]
        assert [m["delta"] for m in nested] == [2, -1, 10]
        assert clerk.get(f"/api/movements/?widget={first['id']}").json()["count"] == 3
        assert clerk.get("/api/movements/?reason=received").json()["count"] == 1
        assert clerk.get(f"/api/movements/?created_by={clerk.user.username}").json()["count"] == 3
        assert clerk.get(f"/api/movements/?created_by={manager.user.username}").json()["count"] == 2
        assert clerk.get(f"/api/widgets/{first['id']}/movements/?reason=sold").json()["count"] == 1

    def test_movement_time_range_filters_are_inclusive(self, clerk, create_widget):
        widget = create_widget(stock=1)
        movement = clerk.get(f"/api/widgets/{widget['id']}/movements/").json()["results"][0]
        at = movement["created_at"]

        assert clerk.get("/api/movements/", {"created_after": at}).json()["count"] == 1
        assert clerk.get("/api/movements/", {"created_before": at}).json()["count"] == 1
        assert clerk.get("/api/movements/", {"created_after": "2999-01-01T00:00:00Z"}).json()["count"] == 0

    @pytest.mark.parametrize(
        "query, param",
        [("widget=abc", "widget"), ("reason=stolen", "reason"), ("created_after=yesterday", "created_after")],
    )
    def test_invalid_movement_filter_is_400(self, viewer, query, param):
        response = viewer.get(f"/api/movements/?{query}")

        assert response.status_code == 400
        assert param in response.json()

    def test_nested_movements_of_unknown_widget_is_404(self, viewer):
        assert viewer.get("/api/widgets/999999/movements/").status_code == 404

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    @pytest.mark.parametrize("user", ["viewer", "clerk", "manager", "superuser"])
    def test_movements_cannot_be_written_by_anyone(self, request, create_widget, method, user):
        client = request.getfixturevalue(user)
        widget = create_widget(stock=3)
        movement_id = StockMovement.objects.get(widget_id=widget["id"]).pk
        url = "/api/movements/" if method == "post" else f"/api/movements/{movement_id}/"

        response = getattr(client, method)(
            url, {"delta": 5, "reason": "received", "widget": widget["id"]}, format="json"
        )

        assert response.status_code == 405
        assert StockMovement.objects.get(pk=movement_id).delta == 3
