"""POST /api/adjustments/: several stock adjustments, all or nothing."""

import pytest

from widgets.models import StockMovement, Widget

from .conftest import IS_POSTGRES

pytestmark = pytest.mark.django_db

URL = "/api/adjustments/"


def item(widget, delta, reason="received", **extra):
    return {"widget": widget["id"] if isinstance(widget, dict) else widget, "delta": delta, "reason": reason, **extra}


def post_batch(client, *items):
    return client.post(URL, {"items": list(items)}, format="json")


def snapshot():
    """Every widget's stock and version, and the ledger's size: 'nothing changed' is this, unchanged."""
    return list(Widget.objects.order_by("pk").values_list("pk", "stock", "version")), StockMovement.objects.count()


class TestApply:
    def test_batch_applies_every_item_in_order_and_returns_the_movements(self, clerk, create_widget):
        bolts, nuts = create_widget(stock=10), create_widget(stock=0)

        response = post_batch(
            clerk,
            item(bolts, -4, "sold", note="order 1"),
            item(nuts, 20),
            item(bolts, 5, "returned"),
            item(nuts, -3, "damaged"),
        )

        assert response.status_code == 201, response.content
        movements = response.json()["movements"]
        assert [(m["widget"], m["delta"], m["reason"], m["stock_after"]) for m in movements] == [
            (bolts["id"], -4, "sold", 6),
            (nuts["id"], 20, "received", 20),
            (bolts["id"], 5, "returned", 11),
            (nuts["id"], -3, "damaged", 17),
        ]
        assert movements[0]["note"] == "order 1"
        assert {m["created_by"] for m in movements} == {clerk.user.username}
        assert Widget.objects.get(pk=bolts["id"]).stock == 11
        assert Widget.objects.get(pk=nuts["id"]).stock == 17
        listed = clerk.get(f"/api/movements/?widget={bolts['id']}").json()["results"]
        assert [m["id"] for m in listed[:2]] == [movements[2]["id"], movements[0]["id"]]

    def test_same_widget_may_go_to_zero_and_back_within_a_batch(self, clerk, create_widget):
        widget = create_widget(stock=2)

        response = post_batch(clerk, item(widget, -2, "sold"), item(widget, 5), item(widget, -5, "sold"))

        assert response.status_code == 201, response.content
        assert Widget.objects.get(pk=widget["id"]).stock == 0

    def test_each_widget_changed_gets_a_new_version_once_and_others_keep_theirs(self, clerk, create_widget):
        bolts, nuts, untouched = create_widget(stock=10), create_widget(stock=10), create_widget(stock=10)
        before = {w["id"]: clerk.get(f"/api/widgets/{w['id']}/") for w in (bolts, nuts, untouched)}

        response = post_batch(clerk, item(bolts, 1), item(nuts, -2, "sold"), item(bolts, 3))

        assert response.status_code == 201, response.content
        after = {pk: clerk.get(f"/api/widgets/{pk}/") for pk in before}
        for widget, stock in ((bolts, 14), (nuts, 8)):
            old, new = before[widget["id"]], after[widget["id"]]
            assert new.json()["stock"] == stock
            assert new["ETag"] != old["ETag"]
            assert new.json()["updated_at"] > old.json()["updated_at"]
        versions = dict(Widget.objects.values_list("pk", "version"))
        assert versions[bolts["id"]] == versions[nuts["id"]] == versions[untouched["id"]] + 1
        assert after[untouched["id"]]["ETag"] == before[untouched["id"]]["ETag"]
        assert after[untouched["id"]].json() == before[untouched["id"]].json()

    def test_full_batch_of_500_runs_in_a_handful_of_queries(self, clerk, create_widget, django_assert_max_num_queries):
        widgets = [create_widget(stock=1000) for _ in range(10)]
        items = [item(widgets[i % 10], -1, "sold") for i in range(500)]

        # Token (and its first use), permissions, subscriptions, and on PostgreSQL one statement (the UPDATE of
        # every widget feeding the INSERT of every movement) between SAVEPOINT and RELEASE;
        # elsewhere one locking SELECT, the units reserved, one UPDATE and the INSERT (which
        # SQLite splits into a few statements): independent of the number of items.
        with django_assert_max_num_queries(8 if IS_POSTGRES else 14):
            response = post_batch(clerk, *items)

        assert response.status_code == 201
        assert len(response.json()["movements"]) == 500
        assert {w.stock for w in Widget.objects.filter(pk__in=[w["id"] for w in widgets])} == {950}

    def test_manager_may_post_batches(self, manager, create_widget):
        assert post_batch(manager, item(create_widget(), 1)).status_code == 201


class TestAllOrNothing:
    def test_insufficient_stock_is_409_naming_the_item_and_applies_nothing(self, clerk, create_widget):
        plenty, scarce = create_widget(stock=10), create_widget(stock=1)
        before = snapshot()

        response = post_batch(
            clerk, item(plenty, -1, "sold"), item(plenty, 3), item(scarce, -2, "sold"), item(scarce, -5, "sold")
        )

        assert response.status_code == 409
        body = response.json()
        assert (body["code"], body["index"], body["available"]) == ("insufficient_stock", 2, 1)
        assert "Item 2" in body["detail"]
        assert snapshot() == before

    def test_a_repeated_widget_running_out_names_the_later_item(self, clerk, create_widget):
        widget = create_widget(stock=3)
        before = snapshot()

        response = post_batch(clerk, item(widget, -2, "sold"), item(widget, -2, "sold"))

        assert response.status_code == 409
        assert (response.json()["index"], response.json()["available"]) == (1, 1)
        assert snapshot() == before

    def test_exceeding_the_stock_limit_is_409(self, clerk, create_widget):
        widget = create_widget(stock=2_147_483_000)

        response = post_batch(clerk, item(widget, 600), item(widget, 100))

        assert response.status_code == 409
        assert (response.json()["code"], response.json()["index"]) == ("stock_limit_exceeded", 1)

    def test_unknown_widget_is_400_naming_the_item(self, clerk, create_widget):
        widget = create_widget(stock=5)
        before = snapshot()

        response = post_batch(clerk, item(widget, -1, "sold"), item(999999, 1))

        assert response.status_code == 400
        assert (response.json()["code"], response.json()["index"]) == ("unknown_widget", 1)
        assert snapshot() == before

    @pytest.mark.parametrize(
        "bad, field",
        [
            ({"delta": 0}, "delta"),
            ({"delta": "ten"}, "delta"),
            ({"delta": 2**40}, "delta"),
            ({"reason": "stolen"}, "reason"),
            ({"reason": "initial"}, "reason"),
            ({"note": "n" * 256}, "note"),
            ({"widget": "abc"}, "widget"),
            ({"widget": None}, "widget"),
        ],
    )
    def test_invalid_item_is_400_naming_the_item_and_field(self, clerk, create_widget, bad, field):
        widget = create_widget(stock=5)
        before = snapshot()

        response = post_batch(clerk, item(widget, 1), item(widget, 1), {**item(widget, 1), **bad}, {"junk": True})

        assert response.status_code == 400
        body = response.json()
        assert (body["index"], body["field"]) == (2, field)
        assert set(body) >= {"detail", "code", "index"}
        assert snapshot() == before

    def test_missing_item_field_and_non_object_item_name_the_item(self, clerk, create_widget):
        widget = create_widget(stock=5)

        missing = post_batch(clerk, item(widget, 1), {"widget": widget["id"], "delta": 1})
        not_object = post_batch(clerk, "hello")

        assert (missing.status_code, missing.json()["index"], missing.json()["field"]) == (400, 1, "reason")
        assert (not_object.status_code, not_object.json()["index"]) == (400, 0)

    @pytest.mark.parametrize(
        "body",
        [{}, {"items": []}, {"items": "all"}, {"items": None}],
        ids=["missing", "empty", "not-a-list", "null"],
    )
    def test_malformed_batch_is_400_naming_items(self, clerk, body):
        response = clerk.post(URL, body, format="json")

        assert response.status_code == 400
        assert "items" in response.json()

    def test_empty_batch_says_to_send_an_item_in_plain_english(self, clerk):
        response = clerk.post(URL, {"items": []}, format="json")

        assert response.status_code == 400
        assert response.json() == {"items": {"non_field_errors": ["Send at least one item."]}}

    def test_more_than_500_items_is_400(self, clerk, create_widget):
        widget = create_widget()
        before = snapshot()

        response = post_batch(clerk, *[item(widget, 1)] * 501)

        assert response.status_code == 400
        assert response.json() == {"items": {"non_field_errors": ["Send at most 500 items."]}}
        assert snapshot() == before


class TestPermissions:
    @pytest.mark.parametrize("user, status", [("anon", 401), ("no_role", 403), ("viewer", 403)])
    def test_only_clerks_and_managers_may_adjust(self, request, create_widget, user, status):
        client = request.getfixturevalue(user)
        widget = create_widget(stock=5)

        assert post_batch(client, item(widget, -1, "sold")).status_code == status
        assert Widget.objects.get(pk=widget["id"]).stock == 5

    def test_read_only_token_is_403(self, clerk, create_widget):
        from .conftest import token_client

        read_only = token_client(clerk.user, read_only=True)

        assert post_batch(read_only, item(create_widget(), 1)).status_code == 403

    @pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
    def test_other_methods_are_405(self, clerk, method):
        assert getattr(clerk, method)(URL).status_code == 405
