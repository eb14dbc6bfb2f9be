"""Widgets through the API: create, read, update, delete, and what each refuses."""

import pytest

from widgets.models import StockMovement, Widget

pytestmark = pytest.mark.django_db


class TestCreate:
    def test_create_with_stock_assigns_sku_and_records_initial_movement(self, manager):
        response = manager.post("/api/widgets/", {"name": "Spanner", "stock": 20}, format="json")

        assert response.status_code == 201, response.content
        body = response.json()
        assert body["sku"] == f"WGT-{body['id']:06d}"
        assert body["stock"] == 20
        assert body["price"] == "0.00"
        assert body["low_stock"] is False
        movements = manager.get(f"/api/widgets/{body['id']}/movements/").json()["results"]
        assert [(m["delta"], m["reason"], m["stock_after"], m["created_by"]) for m in movements] == [
            (20, "initial", 20, manager.user.username)
        ]

    def test_create_without_stock_writes_no_movement(self, manager):
        body = manager.post("/api/widgets/", {"name": "Bolt"}, format="json").json()

        assert body["stock"] == 0
        assert not StockMovement.objects.filter(widget_id=body["id"]).exists()

    def test_representation_has_every_documented_field(self, manager, create_category):
        category = create_category()
        body = manager.post(
            "/api/widgets/",
            {"name": "Nut", "sku": "nut-1", "category": category["id"], "price": "1.5", "reorder_level": 3},
            format="json",
        ).json()

        assert set(body) == {
            "id",
            "url",
            "sku",
            "name",
            "description",
            "category",
            "price",
            "stock",
            "reserved",
            "available",
            "reorder_level",
            "low_stock",
            "is_active",
            "created_at",
            "updated_at",
        }
        assert body["sku"] == "NUT-1"
        assert body["category"] == category["id"]
        assert body["price"] == "1.50"
        assert body["low_stock"] is True  # 0 <= 3
        assert body["url"].endswith(f"/api/widgets/{body['id']}/")

    def test_duplicate_sku_differing_only_in_case_is_400_on_sku(self, manager, create_widget):
        create_widget(sku="ABC-1")

        response = manager.post("/api/widgets/", {"name": "Again", "sku": "abc-1"}, format="json")

        assert response.status_code == 400
        assert "sku" in response.json()
        assert Widget.objects.filter(sku="ABC-1").count() == 1

    @pytest.mark.parametrize(
        "payload, field",
        [
            ({"name": ""}, "name"),
            ({"name": "x" * 101}, "name"),
            ({}, "name"),
            ({"name": "W", "sku": "bad sku!"}, "sku"),
            ({"name": "W", "sku": "A" * 33}, "sku"),
            ({"name": "W", "price": "-1"}, "price"),
            ({"name": "W", "price": "1.234"}, "price"),
            ({"name": "W", "price": "abc"}, "price"),
            ({"name": "W", "stock": -1}, "stock"),
            ({"name": "W", "stock": "many"}, "stock"),
            ({"name": "W", "reorder_level": -1}, "reorder_level"),
            ({"name": "W", "is_active": "maybe"}, "is_active"),
        ],
    )
    def test_invalid_field_is_400_naming_it_and_creates_nothing(self, manager, payload, field):
        response = manager.post("/api/widgets/", payload, format="json")

        assert response.status_code == 400
        assert field in response.json()
        assert not Widget.objects.exists()

    def test_unknown_category_is_400_naming_it_and_creates_nothing(self, manager):
        response = manager.post("/api/widgets/", {"name": "W", "category": 999999}, format="json")

        assert response.status_code == 400
        assert "does not exist" in response.json()["category"][0]
        assert not Widget.objects.exists()


class TestUpdate:
    def test_patch_changes_descriptive_fields(self, manager, create_widget):
        widget = create_widget(stock=5)

        response = manager.patch(f"/api/widgets/{widget['id']}/", {"name": "Renamed", "price": "9.99"}, format="json")

        assert response.status_code == 200
        assert response.json()["name"] == "Renamed"
        assert response.json()["price"] == "9.99"
        assert response.json()["stock"] == 5

    def test_put_with_unchanged_stock_is_accepted(self, manager, create_widget):
        widget = create_widget(stock=5)
        widget.pop("category")

        response = manager.put(f"/api/widgets/{widget['id']}/", {**widget, "name": "Same stock"}, format="json")

        assert response.status_code == 200, response.content
        assert response.json()["stock"] == 5

    @pytest.mark.parametrize("method", ["put", "patch"])
    def test_changing_stock_is_400_pointing_at_adjust(self, manager, create_widget, method):
        widget = create_widget(stock=5)

        response = getattr(manager, method)(
            f"/api/widgets/{widget['id']}/", {"name": widget["name"], "stock": 50}, format="json"
        )

        assert response.status_code == 400
        assert "adjust" in response.json()["stock"][0]
        assert Widget.objects.get(pk=widget["id"]).stock == 5

    def test_sku_change_to_existing_sku_is_400(self, manager, create_widget):
        create_widget(sku="TAKEN")
        widget = create_widget()

        response = manager.patch(f"/api/widgets/{widget['id']}/", {"sku": "taken"}, format="json")

        assert response.status_code == 400
        assert "sku" in response.json()


class TestDelete:
    def test_widget_without_history_is_deleted(self, manager, create_widget):
        widget = create_widget()

        assert manager.delete(f"/api/widgets/{widget['id']}/").status_code == 204
        assert manager.get(f"/api/widgets/{widget['id']}/").status_code == 404

    def test_widget_with_history_is_409_suggesting_archive(self, manager, create_widget):
        widget = create_widget(stock=1)

        response = manager.delete(f"/api/widgets/{widget['id']}/")

        assert response.status_code == 409
        assert response.json()["code"] == "widget_has_history"
        assert "is_active=false" in response.json()["detail"]
        assert Widget.objects.filter(pk=widget["id"]).exists()

    def test_archived_widget_stays_listed_unless_filtered(self, manager, create_widget):
        widget = create_widget(stock=1)
        manager.patch(f"/api/widgets/{widget['id']}/", {"is_active": False}, format="json")

        assert manager.get("/api/widgets/").json()["count"] == 1
        assert manager.get("/api/widgets/?is_active=true").json()["count"] == 0
        assert manager.get("/api/widgets/?is_active=false").json()["count"] == 1


class TestRead:
    def test_retrieve_and_unknown_id(self, viewer, create_widget):
        widget = create_widget(name="Lookup")

        assert viewer.get(f"/api/widgets/{widget['id']}/").json()["name"] == "Lookup"
        missing = viewer.get("/api/widgets/987654/")
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"

    @pytest.mark.parametrize("bad_id", ["abc", "1.5", "99999999999999999999999"])
    def test_malformed_ids_are_json_404(self, viewer, bad_id):
        response = viewer.get(f"/api/widgets/{bad_id}/")

        assert response.status_code == 404
        assert response["Content-Type"].startswith("application/json")
