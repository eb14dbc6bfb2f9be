"""Categories through the API: CRUD, the derived slug, and deleting one still in use."""

import pytest

from widgets.models import Category, Widget

pytestmark = pytest.mark.django_db


class TestCreate:
    def test_create_derives_slug_and_returns_representation(self, manager):
        response = manager.post("/api/categories/", {"name": "Power Tools", "description": "Cordless"}, format="json")

        assert response.status_code == 201, response.content
        body = response.json()
        assert set(body) == {"id", "url", "name", "slug", "description"}
        assert (body["name"], body["slug"], body["description"]) == ("Power Tools", "power-tools", "Cordless")
        assert body["url"].endswith(f"/api/categories/{body['id']}/")

    def test_slug_sent_by_the_client_is_ignored(self, manager):
        body = manager.post("/api/categories/", {"name": "Fittings", "slug": "my-slug"}, format="json").json()

        assert body["slug"] == "fittings"

    def test_duplicate_name_is_400_on_name(self, manager, create_category):
        create_category(name="Bolts")

        response = manager.post("/api/categories/", {"name": "Bolts"}, format="json")

        assert response.status_code == 400
        assert "name" in response.json()
        assert Category.objects.count() == 1

    def test_name_with_the_same_slug_is_400_on_name(self, manager, create_category):
        create_category(name="Hand Tools")

        response = manager.post("/api/categories/", {"name": "hand  tools!"}, format="json")

        assert response.status_code == 400
        assert "hand-tools" in response.json()["name"][0]
        assert Category.objects.count() == 1

    @pytest.mark.parametrize("name", ["", "!!!", "x" * 101])
    def test_invalid_name_is_400_on_name(self, manager, name):
        response = manager.post("/api/categories/", {"name": name}, format="json")

        assert response.status_code == 400
        assert "name" in response.json()
        assert not Category.objects.exists()


class TestReadUpdate:
    def test_list_and_retrieve(self, viewer, create_category):
        category = create_category(name="Safety")

        assert viewer.get("/api/categories/").json()["results"] == [category]
        assert viewer.get(f"/api/categories/{category['id']}/").json() == category

    def test_unknown_category_is_json_404(self, viewer):
        response = viewer.get("/api/categories/424242/")

        assert response.status_code == 404
        assert response.json()["code"] == "not_found"

    def test_rename_updates_the_slug(self, manager, create_category):
        category = create_category(name="Storage")

        response = manager.patch(f"/api/categories/{category['id']}/", {"name": "Cold Storage"}, format="json")

        assert response.status_code == 200
        assert response.json()["slug"] == "cold-storage"
        assert manager.get("/api/widgets/", {"category": "cold-storage"}).status_code == 200

    def test_put_replaces_name_and_description(self, manager, create_category):
        category = create_category(name="Old", description="old")

        response = manager.put(
            f"/api/categories/{category['id']}/", {"name": "New", "description": "new"}, format="json"
        )

        assert response.status_code == 200
        assert Category.objects.filter(pk=category["id"], name="New", slug="new", description="new").exists()

    def test_rename_to_its_own_slug_is_allowed(self, manager, create_category):
        category = create_category(name="Adhesives")

        response = manager.patch(f"/api/categories/{category['id']}/", {"name": "ADHESIVES"}, format="json")

        assert response.status_code == 200
        assert response.json()["slug"] == "adhesives"

    def test_rename_onto_another_slug_is_400_and_changes_nothing(self, manager, create_category):
        create_category(name="Bolts")
        nuts = create_category(name="Nuts")

        response = manager.patch(f"/api/categories/{nuts['id']}/", {"name": "BOLTS"}, format="json")

        assert response.status_code == 400
        assert "name" in response.json()
        assert Category.objects.get(pk=nuts["id"]).name == "Nuts"


class TestDelete:
    def test_unused_category_is_deleted(self, manager, create_category):
        category = create_category()

        assert manager.delete(f"/api/categories/{category['id']}/").status_code == 204
        assert not Category.objects.filter(pk=category["id"]).exists()

    def test_category_with_widgets_is_409_and_nothing_is_deleted(self, manager, create_category, create_widget):
        category = create_category()
        widget = create_widget(category=category["id"])

        response = manager.delete(f"/api/categories/{category['id']}/")

        assert response.status_code == 409
        body = response.json()
        assert body["code"] == "category_in_use"
        assert "still has widgets" in body["detail"]
        assert body["widgets"] == 1
        assert Category.objects.filter(pk=category["id"]).exists()
        assert Widget.objects.get(pk=widget["id"]).category_id == category["id"]
