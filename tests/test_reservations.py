"""Reservations through HTTP: units held for an order until a time limit, then committed
as a sale or released; and what they do to a widget's reserved and available units.

Expiry is tested with a controllable clock (time-machine), never with sleeps. The races
(PostgreSQL) are in test_concurrency.py.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from widgets.models import ChangeLogEntry, Reservation, StockMovement, Widget

from .conftest import assert_reservation_invariant

pytestmark = pytest.mark.django_db

URL = "/api/reservations/"


def reserve(client, *items, key=None, **body):
    """POST a reservation of ``(widget_id, quantity)`` pairs."""
    body.setdefault("reference", "order-1042")
    body.setdefault("items", [{"widget": w, "quantity": q} for w, q in items])
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(URL, body, format="json", headers=headers)


def act(client, reservation_id, verb, key=None, **body):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"{URL}{reservation_id}/{verb}/", body, format="json", headers=headers)


def widget_of(client, widget_id):
    return client.get(f"/api/widgets/{widget_id}/").json()


@pytest.fixture
def clock(time_machine):
    """A stopped clock; ``clock.shift(seconds)`` moves it.

    Set two days back, so that when the real time returns after the test every
    reservation made meanwhile has expired: a reservation that expired in the test
    must not come back to life. The reservation invariant is checked at the test's
    own time before the clock is handed back (conftest checks it again at the real time).
    """
    time_machine.move_to(timezone.now() - timedelta(days=2), tick=False)
    yield time_machine
    assert_reservation_invariant()


class TestCreate:
    def test_reserving_holds_the_units_and_answers_the_documented_fields(self, clerk, create_widget, clock):
        bolt, nut = create_widget(stock=10), create_widget(stock=4)

        response = reserve(clerk, (bolt["id"], 2), (nut["id"], 4), ttl_seconds=600)

        assert response.status_code == 201, response.content
        body = response.json()
        assert set(body) == {
            "id",
            "reference",
            "status",
            "created_at",
            "expires_at",
            "closed_at",
            "items",
            "created_by",
        }
        assert body["reference"] == "order-1042"
        assert body["status"] == "active"
        assert body["items"] == [{"widget": bolt["id"], "quantity": 2}, {"widget": nut["id"], "quantity": 4}]
        assert body["created_by"] == clerk.user.username
        assert body["closed_at"] is None
        created, expires = parse_datetime(body["created_at"]), parse_datetime(body["expires_at"])
        assert created == timezone.now()
        assert expires - created == timedelta(seconds=600)
        assert {k: widget_of(clerk, bolt["id"])[k] for k in ("stock", "reserved", "available")} == {
            "stock": 10,
            "reserved": 2,
            "available": 8,
        }
        assert {k: widget_of(clerk, nut["id"])[k] for k in ("stock", "reserved", "available")} == {
            "stock": 4,
            "reserved": 4,
            "available": 0,
        }

    def test_the_time_limit_defaults_to_900_seconds(self, clerk, create_widget):
        widget = create_widget(stock=1)

        body = reserve(clerk, (widget["id"], 1)).json()

        assert parse_datetime(body["expires_at"]) - parse_datetime(body["created_at"]) == timedelta(seconds=900)

    def test_reserving_leaves_stock_and_the_ledger_alone(self, clerk, create_widget):
        widget = create_widget(stock=10)

        reserve(clerk, (widget["id"], 3))

        assert Widget.objects.get(pk=widget["id"]).stock == 10
        assert StockMovement.objects.filter(widget_id=widget["id"]).count() == 1  # the initial one

    def test_an_item_beyond_what_is_available_holds_nothing_and_names_the_item(self, clerk, create_widget):
        plenty, scarce = create_widget(stock=10), create_widget(stock=5)
        assert reserve(clerk, (scarce["id"], 3), reference="earlier").status_code == 201

        response = reserve(clerk, (plenty["id"], 4), (scarce["id"], 3))

        assert response.status_code == 409, response.content
        body = response.json()
        assert {k: body[k] for k in ("code", "index", "widget", "available")} == {
            "code": "insufficient_stock",
            "index": 1,
            "widget": scarce["id"],
            "available": 2,
        }
        assert widget_of(clerk, plenty["id"])["reserved"] == 0
        assert Reservation.objects.count() == 1

    def test_the_last_units_can_be_reserved_exactly(self, clerk, create_widget):
        widget = create_widget(stock=3)

        assert reserve(clerk, (widget["id"], 3)).status_code == 201
        refused = reserve(clerk, (widget["id"], 1))

        assert refused.status_code == 409
        assert refused.json()["available"] == 0

    def test_an_unknown_widget_is_400_naming_the_item_and_holds_nothing(self, clerk, create_widget):
        widget = create_widget(stock=5)

        response = reserve(clerk, (widget["id"], 1), (987654321, 1))

        assert response.status_code == 400
        assert {k: response.json()[k] for k in ("code", "index")} == {"code": "unknown_widget", "index": 1}
        assert Reservation.objects.count() == 0

    def test_a_widget_named_twice_is_400_naming_the_second(self, clerk, create_widget):
        widget = create_widget(stock=5)

        response = reserve(clerk, (widget["id"], 1), (widget["id"], 2))

        assert response.status_code == 400
        assert {k: response.json()[k] for k in ("code", "index", "field")} == {
            "code": "duplicate_widget",
            "index": 1,
            "field": "widget",
        }
        assert Reservation.objects.count() == 0

    @pytest.mark.parametrize("quantity", [0, -1, 1.5, "2", None])
    def test_a_bad_quantity_is_400_naming_the_item_and_field(self, clerk, create_widget, quantity):
        widget = create_widget(stock=5)

        response = clerk.post(
            URL,
            {
                "reference": "r",
                "items": [
                    {"widget": widget["id"], "quantity": 1},
                    {"widget": widget["id"] + 1, "quantity": quantity},
                ],
            },
            format="json",
        )

        assert response.status_code == 400
        assert {k: response.json()[k] for k in ("index", "field")} == {"index": 1, "field": "quantity"}
        assert Reservation.objects.count() == 0

    @pytest.mark.parametrize("ttl", [59, 86401, 0, -5, "900", 900.5, True])
    def test_a_time_limit_outside_60_to_86400_seconds_is_400(self, clerk, create_widget, ttl):
        widget = create_widget(stock=5)

        response = reserve(clerk, (widget["id"], 1), ttl_seconds=ttl)

        assert response.status_code == 400
        assert "ttl_seconds" in response.json()
        assert Reservation.objects.count() == 0

    @pytest.mark.parametrize("ttl", [60, 86400])
    def test_the_time_limit_bounds_are_accepted(self, clerk, create_widget, ttl):
        widget = create_widget(stock=5)

        assert reserve(clerk, (widget["id"], 1), ttl_seconds=ttl).status_code == 201

    @pytest.mark.parametrize("items, field", [([], "items"), (None, "items"), ("x", "items")])
    def test_no_items_is_400_naming_items(self, clerk, items, field):
        response = clerk.post(URL, {"reference": "r", "items": items}, format="json")

        assert response.status_code == 400
        assert field in response.json()

    def test_at_most_100_items(self, clerk, create_widget):
        widgets = [create_widget(stock=1)["id"] for _ in range(101)]

        too_many = reserve(clerk, *[(w, 1) for w in widgets])
        enough = reserve(clerk, *[(w, 1) for w in widgets[:100]])

        assert too_many.status_code == 400 and "items" in too_many.json()
        assert enough.status_code == 201

    @pytest.mark.parametrize("reference", ["", "   ", "x" * 101, "line\nbreak", 42, None])
    def test_a_bad_reference_is_400_naming_it(self, clerk, create_widget, reference):
        widget = create_widget(stock=5)

        response = reserve(clerk, (widget["id"], 1), reference=reference)

        assert response.status_code == 400
        assert "reference" in response.json()

    def test_a_viewer_cannot_reserve(self, viewer, create_widget):
        widget = create_widget(stock=5)

        assert reserve(viewer, (widget["id"], 1)).status_code == 403
        assert Reservation.objects.count() == 0

    def test_a_read_only_token_cannot_reserve(self, create_widget):
        from .conftest import make_user, token_client

        client = token_client(make_user("clerk"), read_only=True)
        widget = create_widget(stock=5)

        assert reserve(client, (widget["id"], 1)).status_code == 403


class TestIdempotency:
    def test_a_retried_reservation_holds_once_and_replays_the_answer(self, clerk, create_widget):
        widget = create_widget(stock=5)

        first = reserve(clerk, (widget["id"], 2), key="cart-7")
        retry = reserve(clerk, (widget["id"], 2), key="cart-7")

        assert first.status_code == retry.status_code == 201
        assert retry["Idempotent-Replayed"] == "true"
        assert retry.content == first.content
        assert Reservation.objects.count() == 1
        assert widget_of(clerk, widget["id"])["reserved"] == 2

    def test_the_same_key_with_another_body_is_422(self, clerk, create_widget):
        widget = create_widget(stock=5)
        reserve(clerk, (widget["id"], 2), key="cart-8")

        response = reserve(clerk, (widget["id"], 3), key="cart-8")

        assert response.status_code == 422
        assert widget_of(clerk, widget["id"])["reserved"] == 2

    def test_a_commit_retried_with_its_key_sells_once_and_replays(self, clerk, create_widget):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2)).json()

        first = act(clerk, reservation["id"], "commit", key="pay-1")
        retry = act(clerk, reservation["id"], "commit", key="pay-1")

        assert first.status_code == retry.status_code == 201
        assert retry["Idempotent-Replayed"] == "true"
        assert retry.content == first.content
        assert Widget.objects.get(pk=widget["id"]).stock == 3
        assert StockMovement.objects.filter(widget_id=widget["id"], reason="sold").count() == 1

    def test_a_commit_retried_without_a_key_is_409_not_a_second_sale(self, clerk, create_widget):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2)).json()

        assert act(clerk, reservation["id"], "commit").status_code == 201
        again = act(clerk, reservation["id"], "commit")

        assert again.status_code == 409
        assert again.json()["code"] == "reservation_not_active"
        assert Widget.objects.get(pk=widget["id"]).stock == 3


class TestExpiry:
    """A reservation past expires_at is expired and holds nothing, with no job run."""

    def test_an_expired_reservation_stops_holding_at_once(self, clerk, create_widget, clock):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 4), ttl_seconds=60).json()

        clock.shift(59)
        assert clerk.get(f"{URL}{reservation['id']}/").json()["status"] == "active"
        assert widget_of(clerk, widget["id"])["available"] == 1

        clock.shift(1)  # expires_at itself: no longer held
        assert clerk.get(f"{URL}{reservation['id']}/").json()["status"] == "expired"
        assert {k: widget_of(clerk, widget["id"])[k] for k in ("reserved", "available")} == {
            "reserved": 0,
            "available": 5,
        }

    def test_expired_units_can_be_reserved_and_sold_by_others(self, clerk, create_widget, clock):
        widget = create_widget(stock=5)
        reserve(clerk, (widget["id"], 5), ttl_seconds=60)
        assert reserve(clerk, (widget["id"], 1)).status_code == 409

        clock.shift(61)

        assert reserve(clerk, (widget["id"], 3)).status_code == 201
        sold = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -2, "reason": "sold"}, format="json")
        assert sold.status_code == 201, sold.content

    def test_committing_an_expired_reservation_is_409_and_sells_nothing(self, clerk, create_widget, clock):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2), ttl_seconds=60).json()
        clock.shift(61)

        response = act(clerk, reservation["id"], "commit")

        assert response.status_code == 409
        assert response.json()["code"] == "reservation_expired"
        assert response.json()["status"] == "expired"
        assert Widget.objects.get(pk=widget["id"]).stock == 5
        assert not StockMovement.objects.filter(reason="sold").exists()

    @pytest.mark.parametrize("verb, body", [("release", {}), ("extend", {"ttl_seconds": 600})])
    def test_an_expired_reservation_cannot_be_released_or_extended(self, clerk, create_widget, clock, verb, body):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2), ttl_seconds=60).json()
        clock.shift(120)

        response = act(clerk, reservation["id"], verb, **body)

        assert response.status_code == 409
        assert response.json()["code"] == "reservation_expired"
        assert clerk.get(f"{URL}{reservation['id']}/").json()["status"] == "expired"


class TestCommit:
    def test_commit_sells_each_item_in_one_go(self, clerk, create_widget):
        bolt, nut = create_widget(stock=10), create_widget(stock=4)
        reservation = reserve(clerk, (bolt["id"], 2), (nut["id"], 4), reference="order-77").json()

        response = act(clerk, reservation["id"], "commit")

        assert response.status_code == 201, response.content
        body = response.json()
        assert body["status"] == "committed"
        assert body["closed_at"] is not None
        assert [(m["widget"], m["delta"], m["reason"], m["stock_after"]) for m in body["movements"]] == [
            (bolt["id"], -2, "sold", 8),
            (nut["id"], -4, "sold", 0),
        ]
        assert all("order-77" in m["note"] and m["created_by"] == clerk.user.username for m in body["movements"])
        for widget, stock in [(bolt, 8), (nut, 0)]:
            shown = widget_of(clerk, widget["id"])
            assert (shown["stock"], shown["reserved"], shown["available"]) == (stock, 0, stock)
        ledger = clerk.get("/api/movements/", {"reason": "sold"}).json()["results"]
        assert {m["id"] for m in ledger} == {m["id"] for m in body["movements"]}

    def test_commit_leaves_the_available_units_as_they_were(self, clerk, create_widget):
        widget = create_widget(stock=10)
        reservation = reserve(clerk, (widget["id"], 3)).json()
        before = widget_of(clerk, widget["id"])["available"]

        act(clerk, reservation["id"], "commit")

        assert widget_of(clerk, widget["id"])["available"] == before == 7

    def test_a_released_reservation_cannot_be_committed(self, clerk, create_widget):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2)).json()
        act(clerk, reservation["id"], "release")

        response = act(clerk, reservation["id"], "commit")

        assert response.status_code == 409
        assert {k: response.json()[k] for k in ("code", "status")} == {
            "code": "reservation_not_active",
            "status": "released",
        }
        assert Widget.objects.get(pk=widget["id"]).stock == 5

    def test_committing_an_unknown_reservation_is_404(self, clerk):
        assert act(clerk, 987654321, "commit").status_code == 404
        assert act(clerk, 2**70, "commit").status_code == 404

    def test_a_viewer_cannot_commit(self, clerk, viewer, create_widget):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2)).json()

        assert act(viewer, reservation["id"], "commit").status_code == 403
        assert Widget.objects.get(pk=widget["id"]).stock == 5


class TestRelease:
    def test_release_gives_the_units_back(self, clerk, create_widget):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 5)).json()

        response = act(clerk, reservation["id"], "release")

        assert response.status_code == 200, response.content
        assert response.json()["status"] == "released"
        assert response.json()["closed_at"] is not None
        assert widget_of(clerk, widget["id"])["available"] == 5
        assert reserve(clerk, (widget["id"], 5)).status_code == 201

    @pytest.mark.parametrize("first", ["release", "commit"])
    def test_releasing_a_closed_reservation_is_409(self, clerk, create_widget, first):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2)).json()
        act(clerk, reservation["id"], first)

        response = act(clerk, reservation["id"], "release")

        assert response.status_code == 409
        assert response.json()["code"] == "reservation_not_active"


class TestExtend:
    def test_extend_holds_until_ttl_seconds_from_now(self, clerk, create_widget, clock):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2), ttl_seconds=60).json()
        clock.shift(50)

        response = act(clerk, reservation["id"], "extend", ttl_seconds=600)

        assert response.status_code == 200, response.content
        assert parse_datetime(response.json()["expires_at"]) == timezone.now() + timedelta(seconds=600)
        clock.shift(500)
        assert clerk.get(f"{URL}{reservation['id']}/").json()["status"] == "active"
        assert widget_of(clerk, widget["id"])["reserved"] == 2

    def test_extend_never_shortens_the_hold(self, clerk, create_widget):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2), ttl_seconds=3600).json()

        response = act(clerk, reservation["id"], "extend", ttl_seconds=60)

        assert response.status_code == 200
        assert response.json()["expires_at"] == reservation["expires_at"]

    @pytest.mark.parametrize("body", [{}, {"ttl_seconds": 59}, {"ttl_seconds": 86401}, {"ttl_seconds": "600"}])
    def test_a_bad_time_limit_is_400_naming_it(self, clerk, create_widget, body):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2)).json()

        response = act(clerk, reservation["id"], "extend", **body)

        assert response.status_code == 400
        assert "ttl_seconds" in response.json()
        assert clerk.get(f"{URL}{reservation['id']}/").json()["expires_at"] == reservation["expires_at"]

    def test_a_committed_reservation_cannot_be_extended(self, clerk, create_widget):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2)).json()
        act(clerk, reservation["id"], "commit")

        response = act(clerk, reservation["id"], "extend", ttl_seconds=600)

        assert response.status_code == 409
        assert response.json()["code"] == "reservation_not_active"


class TestStockDecreasesAreLimitedByAvailable:
    def test_adjust_cannot_take_reserved_units(self, clerk, create_widget):
        widget = create_widget(stock=10)
        reserve(clerk, (widget["id"], 8))
        url = f"/api/widgets/{widget['id']}/adjust/"

        refused = clerk.post(url, {"delta": -3, "reason": "damaged"}, format="json")
        allowed = clerk.post(url, {"delta": -2, "reason": "sold"}, format="json")

        assert refused.status_code == 409
        assert {k: refused.json()[k] for k in ("code", "available")} == {"code": "insufficient_stock", "available": 2}
        assert allowed.status_code == 201
        assert Widget.objects.get(pk=widget["id"]).stock == 8

    def test_receiving_is_never_blocked(self, clerk, create_widget):
        widget = create_widget(stock=2)
        reserve(clerk, (widget["id"], 2))

        response = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": 5, "reason": "received"}, format="json")

        assert response.status_code == 201
        assert widget_of(clerk, widget["id"])["available"] == 5

    def test_a_batch_cannot_take_reserved_units_and_names_the_item(self, clerk, create_widget):
        free, held = create_widget(stock=10), create_widget(stock=10)
        reserve(clerk, (held["id"], 7))

        response = clerk.post(
            "/api/adjustments/",
            {
                "items": [
                    {"widget": free["id"], "delta": -5, "reason": "sold"},
                    {"widget": held["id"], "delta": 2, "reason": "received"},
                    {"widget": held["id"], "delta": -6, "reason": "sold"},
                ]
            },
            format="json",
        )

        assert response.status_code == 409
        assert {k: response.json()[k] for k in ("code", "index", "available")} == {
            "code": "insufficient_stock",
            "index": 2,
            "available": 5,
        }
        assert [Widget.objects.get(pk=w["id"]).stock for w in (free, held)] == [10, 10]

    def test_a_batch_may_sell_what_it_received_first(self, clerk, create_widget):
        widget = create_widget(stock=5)
        reserve(clerk, (widget["id"], 5))

        response = clerk.post(
            "/api/adjustments/",
            {
                "items": [
                    {"widget": widget["id"], "delta": 3, "reason": "received"},
                    {"widget": widget["id"], "delta": -3, "reason": "sold"},
                ]
            },
            format="json",
        )

        assert response.status_code == 201, response.content

    def test_the_reserved_units_are_sold_by_the_commit_only(self, clerk, create_widget):
        widget = create_widget(stock=4)
        reservation = reserve(clerk, (widget["id"], 4)).json()
        assert clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"}).status_code == 409

        assert act(clerk, reservation["id"], "commit").status_code == 201
        assert Widget.objects.get(pk=widget["id"]).stock == 0


class TestList:
    def test_newest_first_and_paginated(self, clerk, create_widget, clock):
        widget = create_widget(stock=10)
        ids = []
        for n in range(3):
            ids.append(reserve(clerk, (widget["id"], 1), reference=f"order-{n}").json()["id"])
            clock.shift(1)

        body = clerk.get(URL, {"limit": 2}).json()

        assert body["count"] == 3
        assert [r["id"] for r in body["results"]] == ids[::-1][:2]
        assert body["next"] is not None

    def test_a_viewer_reads_the_list_and_one_reservation(self, clerk, viewer, create_widget):
        widget = create_widget(stock=10)
        reservation = reserve(clerk, (widget["id"], 1)).json()

        assert viewer.get(URL).json()["results"] == [reservation]
        assert viewer.get(f"{URL}{reservation['id']}/").json() == reservation

    def test_an_unknown_reservation_is_404(self, viewer):
        assert viewer.get(f"{URL}987654321/").status_code == 404


class TestFilters:
    @pytest.fixture
    def reservations(self, clerk, manager, create_widget, clock):
        first, second = create_widget(stock=20), create_widget(stock=20)
        made = {
            "active": reserve(clerk, (first["id"], 1), reference="order-a").json(),
            "expired": reserve(clerk, (first["id"], 1), reference="order-b", ttl_seconds=60).json(),
            "committed": reserve(manager, (second["id"], 1), reference="order-c").json(),
            "released": reserve(clerk, (first["id"], 1), (second["id"], 1), reference="order-d").json(),
        }
        act(clerk, made["committed"]["id"], "commit")
        act(clerk, made["released"]["id"], "release")
        clock.shift(61)
        return made, first["id"], second["id"]

    def listed(self, client, **query):
        response = client.get(URL, query)
        assert response.status_code == 200, response.content
        return sorted(r["reference"] for r in response.json()["results"])

    @pytest.mark.parametrize(
        "status, expected",
        [
            ("active", ["order-a"]),
            ("expired", ["order-b"]),
            ("committed", ["order-c"]),
            ("released", ["order-d"]),
        ],
    )
    def test_status(self, viewer, reservations, status, expected):
        assert self.listed(viewer, status=status) == expected

    def test_reference(self, viewer, reservations):
        assert self.listed(viewer, reference="order-c") == ["order-c"]

    def test_widget(self, viewer, reservations):
        _, first, second = reservations
        assert self.listed(viewer, widget=second) == ["order-c", "order-d"]
        assert self.listed(viewer, widget=first) == ["order-a", "order-b", "order-d"]

    def test_created_by(self, viewer, manager, reservations):
        assert self.listed(viewer, created_by=manager.user.username) == ["order-c"]

    @pytest.mark.parametrize("query, param", [({"status": "lost"}, "status"), ({"widget": "x"}, "widget")])
    def test_a_bad_filter_value_is_400_naming_it(self, viewer, reservations, query, param):
        response = viewer.get(URL, query)
        assert response.status_code == 400
        assert param in response.json()


class TestWidgetAvailability:
    def test_the_widget_list_shows_reserved_and_available(self, clerk, viewer, create_widget):
        widget = create_widget(stock=10)
        reserve(clerk, (widget["id"], 4))

        shown = next(w for w in viewer.get("/api/widgets/").json()["results"] if w["id"] == widget["id"])

        assert (shown["stock"], shown["reserved"], shown["available"]) == (10, 4, 6)

    def test_min_and_max_available(self, clerk, viewer, create_widget):
        a, _, _ = (
            create_widget(stock=10, sku="AV-A"),
            create_widget(stock=10, sku="AV-B"),
            create_widget(stock=3, sku="AV-C"),
        )
        reserve(clerk, (a["id"], 8))

        def skus(**query):
            return sorted(w["sku"] for w in viewer.get("/api/widgets/", query).json()["results"])

        assert skus(min_available=5) == ["AV-B"]
        assert skus(max_available=3) == ["AV-A", "AV-C"]
        assert skus(min_available=3, max_available=3) == ["AV-C"]

    def test_ordering_by_available(self, clerk, viewer, create_widget):
        a, _, _ = (
            create_widget(stock=10, sku="OR-A"),
            create_widget(stock=5, sku="OR-B"),
            create_widget(stock=7, sku="OR-C"),
        )
        reserve(clerk, (a["id"], 9))

        ascending = [w["sku"] for w in viewer.get("/api/widgets/", {"ordering": "available"}).json()["results"]]
        descending = [w["sku"] for w in viewer.get("/api/widgets/", {"ordering": "-available"}).json()["results"]]

        assert ascending == ["OR-A", "OR-B", "OR-C"]
        assert descending == ["OR-C", "OR-B", "OR-A"]

    def test_low_stock_compares_available_with_the_reorder_level(self, clerk, viewer, create_widget, clock):
        widget = create_widget(stock=10, reorder_level=5, sku="LOW-R")
        assert widget["low_stock"] is False
        reservation = reserve(clerk, (widget["id"], 6), ttl_seconds=60).json()

        shown = widget_of(viewer, widget["id"])
        low = [w["sku"] for w in viewer.get("/api/widgets/", {"low_stock": "true"}).json()["results"]]
        high = [w["sku"] for w in viewer.get("/api/widgets/", {"low_stock": "false"}).json()["results"]]
        assert shown["low_stock"] is True
        assert (low, high) == (["LOW-R"], [])

        clock.shift(61)  # expired: the units are available again
        assert widget_of(viewer, widget["id"])["low_stock"] is False
        assert [w["sku"] for w in viewer.get("/api/widgets/", {"low_stock": "false"}).json()["results"]] == ["LOW-R"]
        assert reservation["id"]

    def test_csv_export_has_reserved_and_available_and_import_ignores_them(self, clerk, viewer, manager, create_widget):
        widget = create_widget(stock=10, sku="CSV-R", name="Held")
        reserve(clerk, (widget["id"], 4))

        exported = viewer.get("/api/widgets/?format=csv")
        text = b"".join(exported.streaming_content).decode()
        header, row = text.splitlines()[:2]
        version = row.split(",")[-3]
        assert header.endswith(",stock,version,reserved,available")
        assert row.endswith(f",10,{version},4,6")

        from django.core.files.uploadedfile import SimpleUploadedFile
        from django.test import Client

        from .conftest import make_user

        staff = Client()
        staff.force_login(make_user("manager", is_staff=True))
        upload = SimpleUploadedFile(
            "widgets.csv", text.replace(f",10,{version},4,6", f",10,{version},9,1").encode(), content_type="text/csv"
        )
        response = staff.post("/admin/widgets/widget/import/", {"file": upload, "dry_run": ""})
        assert response.status_code == 302, response.content.decode()[:2000]
        shown = widget_of(viewer, widget["id"])
        assert (shown["stock"], shown["reserved"], shown["available"]) == (10, 4, 6)


class TestEtags:
    def test_a_reservation_changes_the_widget_tag_and_expiry_changes_it_back(self, clerk, viewer, create_widget, clock):
        widget = create_widget(stock=10)
        url = f"/api/widgets/{widget['id']}/"
        before = viewer.get(url)["ETag"]
        reserve(clerk, (widget["id"], 3), ttl_seconds=60)

        held = viewer.get(url, headers={"If-None-Match": before})
        assert held.status_code == 200
        assert held["ETag"] != before
        assert viewer.get(url, headers={"If-None-Match": held["ETag"]}).status_code == 304

        clock.shift(61)
        expired = viewer.get(url, headers={"If-None-Match": held["ETag"]})
        assert expired.status_code == 200
        assert expired["ETag"] == before
        assert expired.json()["reserved"] == 0

    def test_if_match_with_a_tag_that_shows_reserved_units_guards_an_edit(self, clerk, manager, create_widget):
        widget = create_widget(stock=10)
        reserve(clerk, (widget["id"], 3))
        url = f"/api/widgets/{widget['id']}/"
        tag = manager.get(url)["ETag"]

        edited = manager.patch(url, {"name": "Renamed"}, format="json", headers={"If-Match": tag})
        stale = manager.patch(url, {"name": "Again"}, format="json", headers={"If-Match": tag})

        assert edited.status_code == 200, edited.content
        assert edited.json()["reserved"] == 3
        assert edited["ETag"] == manager.get(url)["ETag"] != tag
        assert stale.status_code == 412

    def test_adjust_answers_the_tag_a_read_would_show(self, clerk, create_widget):
        widget = create_widget(stock=10)
        reserve(clerk, (widget["id"], 3))

        adjusted = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": 1, "reason": "received"}, format="json")

        assert adjusted["ETag"] == clerk.get(f"/api/widgets/{widget['id']}/")["ETag"]


class TestChangeLog:
    def test_who_reserved_committed_released_and_extended_what_and_when(self, clerk, manager, viewer, create_widget):
        widget = create_widget(stock=10)
        kept = reserve(clerk, (widget["id"], 2), reference="order-log-1").json()
        dropped = reserve(clerk, (widget["id"], 1), reference="order-log-2").json()
        act(manager, kept["id"], "extend", ttl_seconds=3600)
        act(manager, kept["id"], "commit")
        act(clerk, dropped["id"], "release")

        entries = viewer.get("/api/changes/", {"object_type": "reservation"}).json()["results"]

        summary = [(e["object_id"], e["action"], e["user"], sorted(e["changes"])) for e in reversed(entries)]
        assert summary == [
            (kept["id"], "create", clerk.user.username, ["expires_at", "items", "reference", "status"]),
            (dropped["id"], "create", clerk.user.username, ["expires_at", "items", "reference", "status"]),
            (kept["id"], "update", manager.user.username, ["expires_at"]),
            (kept["id"], "update", manager.user.username, ["status"]),
            (dropped["id"], "update", clerk.user.username, ["status"]),
        ]
        created = entries[-1]
        assert created["changes"]["items"] == [None, [[widget["id"], 2]]]
        assert created["object_repr"] == "order-log-1"
        assert entries[1]["changes"]["status"] == ["active", "committed"]
        assert entries[0]["changes"]["status"] == ["active", "released"]
        assert ChangeLogEntry.objects.filter(object_type="reservation").count() == 5


class TestQueries:
    """The reserved units are one subquery of the page's SELECT: no query per row."""

    @pytest.fixture
    def held_widgets(self, clerk, create_widget):
        ids = [create_widget(stock=10)["id"] for _ in range(30)]
        for start in range(0, 30, 3):
            reserve(clerk, *[(w, 1) for w in ids[start : start + 3]])
        return ids

    def test_widget_list_queries_do_not_grow_with_the_page(self, viewer, held_widgets, django_assert_max_num_queries):
        from .test_performance import LIST_QUERIES

        viewer.get("/api/widgets/")
        for limit in (1, 30):
            with django_assert_max_num_queries(LIST_QUERIES):
                response = viewer.get("/api/widgets/", {"limit": limit})
            assert [w["reserved"] for w in response.json()["results"]] == [1] * limit

    def test_widget_retrieve_costs_what_it_did(self, viewer, held_widgets, django_assert_max_num_queries):
        viewer.get("/api/widgets/")
        viewer.get(f"/api/widgets/{held_widgets[1]}/")  # the first on a connection PREPAREs (widgets/prepared.py)
        with django_assert_max_num_queries(4):
            response = viewer.get(f"/api/widgets/{held_widgets[0]}/")
        assert response.json()["reserved"] == 1

    def test_reservation_list_queries_do_not_grow_with_the_page(
        self, viewer, held_widgets, django_assert_max_num_queries
    ):
        from .test_performance import LIST_QUERIES

        viewer.get(URL)
        counts = []
        for limit in (1, 10):
            with django_assert_max_num_queries(LIST_QUERIES + 1) as captured:  # + the page's items
                response = viewer.get(URL, {"limit": limit})
            assert len(response.json()["results"]) == limit
            counts.append(len(captured))
        assert counts[0] == counts[1]


class TestSchema:
    @pytest.mark.parametrize(
        "path, method, codes",
        [
            ("/api/reservations/", "get", {"200", "400", "401", "403", "429"}),
            ("/api/reservations/", "post", {"201", "400", "401", "403", "409", "422", "429"}),
            ("/api/reservations/{id}/", "get", {"200", "401", "403", "404", "429"}),
            ("/api/reservations/{id}/commit/", "post", {"201", "401", "403", "404", "409", "422", "429"}),
            ("/api/reservations/{id}/release/", "post", {"200", "401", "403", "404", "409", "422", "429"}),
            ("/api/reservations/{id}/extend/", "post", {"200", "400", "401", "403", "404", "409", "422", "429"}),
        ],
    )
    def test_every_reservation_operation_documents_its_answers(self, anon, path, method, codes):
        schema = anon.get("/api/schema/", {"format": "json"}).json()

        operation = schema["paths"][path][method]

        assert codes <= set(operation["responses"]), sorted(operation["responses"])
        if method == "post":
            assert "Idempotency-Key" in {p["name"] for p in operation["parameters"]}

    def test_the_widget_schema_shows_reserved_and_available_and_their_filters(self, anon):
        schema = anon.get("/api/schema/", {"format": "json"}).json()

        assert {"reserved", "available"} <= set(schema["components"]["schemas"]["Widget"]["properties"])
        parameters = {p["name"] for p in schema["paths"]["/api/widgets/"]["get"]["parameters"]}
        assert {"min_available", "max_available", "ordering"} <= parameters
        status = next(p for p in schema["paths"]["/api/reservations/"]["get"]["parameters"] if p["name"] == "status")
        assert {"active", "committed", "released", "expired"} <= set(status["schema"]["enum"])
