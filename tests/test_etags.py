"""ETag and conditional requests (RFC 9110) on widgets and categories.

The concurrent lost-update case is in test_concurrency.py; here it is run in sequence.
"""

import pytest
from django.test import Client

from widgets.models import Category, Widget

pytestmark = pytest.mark.django_db


def url_of(kind, obj):
    return f"/api/{kind}/{obj['id']}/"


@pytest.fixture(params=["widgets", "categories"])
def thing(request, create_widget, create_category):
    """A freshly created widget or category and its detail URL."""
    create = create_widget if request.param == "widgets" else create_category
    obj = create()
    return {"url": url_of(request.param, obj), "kind": request.param, **obj}


class TestETag:
    def test_get_returns_a_strong_etag(self, viewer, thing):
        response = viewer.get(thing["url"])

        assert response.status_code == 200
        assert response["ETag"].startswith('"') and response["ETag"].endswith('"')

    def test_etag_changes_with_every_write_and_write_responses_carry_the_new_one(self, manager, thing):
        before = manager.get(thing["url"])["ETag"]

        patched = manager.patch(thing["url"], {"description": "changed"}, format="json")

        assert patched.status_code == 200
        assert patched["ETag"] != before
        assert manager.get(thing["url"])["ETag"] == patched["ETag"]

    def test_create_returns_the_etag(self, manager):
        response = manager.post("/api/widgets/", {"name": "Tagged"}, format="json")

        assert response["ETag"] == manager.get(f"/api/widgets/{response.json()['id']}/")["ETag"]

    def test_stock_adjustment_changes_the_widget_etag_and_returns_it(self, clerk, create_widget):
        widget = create_widget(stock=5)
        before = clerk.get(f"/api/widgets/{widget['id']}/")["ETag"]

        adjusted = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": 1, "reason": "received"}, format="json")

        assert adjusted.status_code == 201
        assert adjusted["ETag"] != before
        assert clerk.get(f"/api/widgets/{widget['id']}/")["ETag"] == adjusted["ETag"]

    def test_batch_adjustment_changes_the_widget_etag(self, clerk, create_widget):
        widget = create_widget(stock=5)
        before = clerk.get(f"/api/widgets/{widget['id']}/")["ETag"]

        clerk.post(
            "/api/adjustments/", {"items": [{"widget": widget["id"], "delta": 1, "reason": "received"}]}, format="json"
        )

        assert clerk.get(f"/api/widgets/{widget['id']}/")["ETag"] != before


class TestIfNoneMatch:
    @pytest.mark.parametrize(
        "header", ["{tag}", "W/{tag}", '"other", {tag}', "*"], ids=["exact", "weak", "list", "star"]
    )
    def test_current_tag_is_304_without_a_body(self, viewer, thing, header):
        tag = viewer.get(thing["url"])["ETag"]

        response = viewer.get(thing["url"], headers={"If-None-Match": header.format(tag=tag)})

        assert response.status_code == 304
        assert response.content == b""
        assert response["ETag"] == tag

    def test_stale_tag_is_200_with_the_new_representation(self, manager, thing):
        stale = manager.get(thing["url"])["ETag"]
        manager.patch(thing["url"], {"description": "newer"}, format="json")

        response = manager.get(thing["url"], headers={"If-None-Match": stale})

        assert response.status_code == 200
        assert response.json()["description"] == "newer"
        assert response["ETag"] != stale


class TestIfMatch:
    @pytest.mark.parametrize("header", ["{tag}", '"999", {tag}', "*"], ids=["exact", "list", "star"])
    def test_matching_precondition_allows_the_write(self, manager, thing, header):
        tag = manager.get(thing["url"])["ETag"]

        response = manager.patch(
            thing["url"], {"description": "ok"}, format="json", headers={"If-Match": header.format(tag=tag)}
        )

        assert response.status_code == 200, response.content
        assert response["ETag"] != tag

    @pytest.mark.parametrize(
        "header",
        ["stale", "W/{tag}", '"999"', "garbage", '"abc"'],
        ids=["stale", "weak-never-matches", "other", "unquoted", "not-a-version"],
    )
    def test_failed_precondition_is_412_with_current_etag_and_changes_nothing(self, manager, thing, header):
        stale = manager.get(thing["url"])["ETag"]
        current = manager.patch(thing["url"], {"description": "v2"}, format="json")["ETag"]
        header = stale if header == "stale" else header.format(tag=current)

        response = manager.patch(thing["url"], {"description": "v3"}, format="json", headers={"If-Match": header})

        assert response.status_code == 412
        assert response.json()["code"] == "precondition_failed"
        assert response["ETag"] == current
        assert manager.get(thing["url"]).json()["description"] == "v2"

    def test_put_with_stale_tag_is_412(self, manager, create_widget):
        widget = create_widget(name="Original")
        url = f"/api/widgets/{widget['id']}/"
        stale = manager.get(url)["ETag"]
        manager.patch(url, {"name": "Renamed"}, format="json")

        response = manager.put(
            url, {"name": "Clobber", "sku": widget["sku"]}, format="json", headers={"If-Match": stale}
        )

        assert response.status_code == 412
        assert Widget.objects.get(pk=widget["id"]).name == "Renamed"

    def test_put_with_current_tag_succeeds(self, manager, create_widget):
        widget = create_widget(name="Original")
        url = f"/api/widgets/{widget['id']}/"
        tag = manager.get(url)["ETag"]

        response = manager.put(
            url, {"name": "Replaced", "sku": widget["sku"]}, format="json", headers={"If-Match": tag}
        )

        assert response.status_code == 200, response.content
        assert response["ETag"] == manager.get(url)["ETag"] != tag

    def test_stale_tag_is_412_even_when_the_body_is_invalid(self, manager, thing):
        stale = manager.get(thing["url"])["ETag"]
        manager.patch(thing["url"], {"description": "v2"}, format="json")

        response = manager.patch(thing["url"], {"name": ""}, format="json", headers={"If-Match": stale})

        assert response.status_code == 412

    def test_stock_adjustment_makes_a_widget_tag_stale(self, manager, clerk, create_widget):
        widget = create_widget(stock=5)
        url = f"/api/widgets/{widget['id']}/"
        tag = manager.get(url)["ETag"]
        clerk.post(f"{url}adjust/", {"delta": -1, "reason": "sold"}, format="json")

        response = manager.patch(url, {"name": "Late"}, format="json", headers={"If-Match": tag})

        assert response.status_code == 412

    def test_delete_with_stale_tag_is_412_and_keeps_the_object(self, manager, thing):
        stale = manager.get(thing["url"])["ETag"]
        manager.patch(thing["url"], {"description": "v2"}, format="json")

        response = manager.delete(thing["url"], headers={"If-Match": stale})

        assert response.status_code == 412
        assert manager.get(thing["url"]).status_code == 200

    def test_delete_with_current_tag_deletes(self, manager, thing):
        tag = manager.get(thing["url"])["ETag"]

        assert manager.delete(thing["url"], headers={"If-Match": tag}).status_code == 204
        assert manager.get(thing["url"]).status_code == 404

    def test_precondition_of_unknown_object_is_404(self, manager):
        assert (
            manager.patch("/api/widgets/999999/", {"name": "x"}, format="json", headers={"If-Match": '"1"'}).status_code
            == 404
        )

    def test_sequential_lost_update_is_refused(self, manager, superuser, create_widget):
        """Two clients read the same version; the second writer is told, not silently overwritten."""
        widget = create_widget(name="Shared")
        url = f"/api/widgets/{widget['id']}/"
        tag_a, tag_b = manager.get(url)["ETag"], superuser.get(url)["ETag"]

        first = manager.patch(url, {"name": "From A"}, format="json", headers={"If-Match": tag_a})
        second = superuser.patch(url, {"name": "From B"}, format="json", headers={"If-Match": tag_b})

        assert (first.status_code, second.status_code) == (200, 412)
        assert Widget.objects.get(pk=widget["id"]).name == "From A"


class TestIfMatchRequired:
    @pytest.fixture(autouse=True)
    def _require_if_match(self, settings):
        settings.REQUIRE_IF_MATCH = True

    @pytest.mark.parametrize("method", ["put", "patch", "delete"])
    def test_write_without_if_match_is_428_and_changes_nothing(self, manager, create_widget, method):
        widget = create_widget(name="Guarded")
        url = f"/api/widgets/{widget['id']}/"

        response = getattr(manager, method)(url, {"name": "Unguarded", "sku": widget["sku"]}, format="json")

        assert response.status_code == 428
        assert response.json()["code"] == "precondition_required"
        assert Widget.objects.get(pk=widget["id"]).name == "Guarded"

    def test_write_with_if_match_is_accepted(self, manager, create_category):
        category = create_category()
        url = f"/api/categories/{category['id']}/"
        tag = manager.get(url)["ETag"]

        assert manager.patch(url, {"description": "ok"}, format="json", headers={"If-Match": tag}).status_code == 200

    def test_reads_and_creates_need_no_precondition(self, manager, create_widget):
        widget = create_widget()

        assert manager.get(f"/api/widgets/{widget['id']}/").status_code == 200
        assert manager.post("/api/widgets/", {"name": "New"}, format="json").status_code == 201


class TestAdmin:
    """The admin writes through the same services: it keeps working and bumps the version."""

    def test_admin_change_bumps_the_etag(self, superuser, create_widget):
        widget = create_widget(name="Via admin", stock=3)
        url = f"/api/widgets/{widget['id']}/"
        before = superuser.get(url)["ETag"]
        browser = Client()
        browser.force_login(superuser.user)
        form = {
            "sku": widget["sku"],
            "name": "Renamed in admin",
            "description": "",
            "category": "",
            "price": "1.00",
            "reorder_level": "0",
            "is_active": "on",
            "movements-TOTAL_FORMS": "0",
            "movements-INITIAL_FORMS": "0",
        }

        response = browser.post(f"/admin/widgets/widget/{widget['id']}/change/", form)

        assert response.status_code == 302, response.content[:2000]
        assert Widget.objects.get(pk=widget["id"]).name == "Renamed in admin"
        assert Widget.objects.get(pk=widget["id"]).stock == 3
        assert superuser.get(url)["ETag"] != before

    def test_admin_category_delete_still_works(self, superuser, create_category):
        category = create_category()
        browser = Client()
        browser.force_login(superuser.user)

        response = browser.post(f"/admin/widgets/category/{category['id']}/delete/", {"post": "yes"})

        assert response.status_code == 302
        assert not Category.objects.filter(pk=category["id"]).exists()
