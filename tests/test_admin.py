"""The Django admin as staff use it: widget list, change page, the Adjust stock page."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tests.conftest import make_user
from widgets.models import Category, StockMovement, Widget

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True, username="staffer"))
    return client


@pytest.fixture
def widgets(create_widget, create_category):
    tools = create_category(name="Tools")
    low = create_widget(name="Low spanner", sku="LOW-1", stock=2, reorder_level=5, category=tools["id"])
    plenty = create_widget(name="Plenty bolt", sku="PLENTY-1", stock=50, reorder_level=5)
    return low, plenty


def test_staff_login_through_the_login_page():
    make_user(is_staff=True, username="desk")
    client = Client()

    response = client.post("/admin/login/?next=/admin/", {"username": "desk", "password": "pw-Secret-123"})

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_widget_changelist_shows_the_columns(staff, widgets):
    page = staff.get("/admin/widgets/widget/").content.decode()

    for column in ["sku", "name", "category", "stock", "reorder_at", "is_low_stock", "price", "active", "updated"]:
        assert f'class="sortable column-{column}' in page or f'class="column-{column}' in page, column
    assert "LOW-1" in page and "PLENTY-1" in page


def test_low_stock_filter(staff, widgets):
    low = staff.get("/admin/widgets/widget/", {"low_stock": "yes"}).content.decode()
    high = staff.get("/admin/widgets/widget/", {"low_stock": "no"}).content.decode()

    assert "LOW-1" in low and "PLENTY-1" not in low
    assert "PLENTY-1" in high and "LOW-1" not in high


def test_search_by_sku_and_name(staff, widgets):
    by_sku = staff.get("/admin/widgets/widget/", {"q": "plenty-1"}).content.decode()
    by_name = staff.get("/admin/widgets/widget/", {"q": "spanner"}).content.decode()

    assert "PLENTY-1" in by_sku and "LOW-1" not in by_sku
    assert "LOW-1" in by_name and "PLENTY-1" not in by_name


def test_change_page_shows_stock_read_only_and_recent_movements(staff, widgets, clerk):
    low, _ = widgets
    clerk.post(
        f"/api/widgets/{low['id']}/adjust/", {"delta": 3, "reason": "received", "note": "crate 9"}, format="json"
    )

    page = staff.get(f"/admin/widgets/widget/{low['id']}/change/").content.decode()

    assert 'name="stock"' not in page  # read-only: shown, not editable
    assert "Recent stock movements" in page
    assert "crate 9" in page
    assert f"/admin/widgets/widget/{low['id']}/adjust/" in page


def test_saving_the_change_form_keeps_stock_and_ledger(staff, widgets):
    low, _ = widgets
    form = {
        "sku": "LOW-1",
        "name": "Renamed in admin",
        "description": "",
        "category": "",
        "price": "1.00",
        "reorder_level": "5",
        "is_active": "on",
        "movements-TOTAL_FORMS": "0",
        "movements-INITIAL_FORMS": "0",
        "stock": "999",
    }

    response = staff.post(f"/admin/widgets/widget/{low['id']}/change/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    widget = Widget.objects.get(pk=low["id"])
    assert (widget.name, widget.stock) == ("Renamed in admin", 2)


class TestAdjustPage:
    def test_get_shows_the_form(self, staff, widgets):
        low, _ = widgets

        response = staff.get(f"/admin/widgets/widget/{low['id']}/adjust/")

        assert response.status_code == 200
        page = response.content.decode()
        assert 'id="adjust-stock-form"' in page and 'name="delta"' in page

    def test_post_records_a_movement_as_the_staff_user_and_redirects(self, staff, widgets):
        low, _ = widgets

        response = staff.post(f"/admin/widgets/widget/{low['id']}/adjust/", {"delta": "7", "reason": "received"})

        assert response.status_code == 302
        assert response["Location"] == f"/admin/widgets/widget/{low['id']}/change/"
        movement = StockMovement.objects.filter(widget_id=low["id"]).latest("id")
        assert (movement.delta, movement.stock_after, movement.created_by.username) == (7, 9, "staffer")
        assert Widget.objects.get(pk=low["id"]).stock == 9

    def test_overselling_shows_a_form_error_and_writes_nothing(self, staff, widgets):
        low, _ = widgets

        response = staff.post(f"/admin/widgets/widget/{low['id']}/adjust/", {"delta": "-3", "reason": "sold"})

        assert response.status_code == 200
        assert "Insufficient stock: 2 available" in response.content.decode()
        assert StockMovement.objects.filter(widget_id=low["id"]).count() == 1
        assert Widget.objects.get(pk=low["id"]).stock == 2

    def test_zero_change_is_a_form_error(self, staff, widgets):
        low, _ = widgets

        response = staff.post(f"/admin/widgets/widget/{low['id']}/adjust/", {"delta": "0", "reason": "sold"})

        assert response.status_code == 200
        assert "must not be zero" in response.content.decode()

    def test_staff_without_add_stockmovement_gets_403(self, widgets):
        low, _ = widgets
        user = make_user(is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_widget"))
        client = Client()
        client.force_login(user)

        assert client.get(f"/admin/widgets/widget/{low['id']}/change/").status_code == 200
        assert client.get(f"/admin/widgets/widget/{low['id']}/adjust/").status_code == 403
        response = client.post(f"/admin/widgets/widget/{low['id']}/adjust/", {"delta": "1", "reason": "received"})
        assert response.status_code == 403
        assert StockMovement.objects.filter(widget_id=low["id"]).count() == 1

    def test_unknown_widget_is_404(self, staff):
        assert staff.get("/admin/widgets/widget/999999/adjust/").status_code == 404


def test_stock_movement_admin_is_read_only(staff, widgets):
    movement = StockMovement.objects.first()

    assert staff.get("/admin/widgets/stockmovement/").status_code == 200
    assert staff.get("/admin/widgets/stockmovement/add/").status_code == 403
    page = staff.get(f"/admin/widgets/stockmovement/{movement.pk}/change/").content.decode()
    assert 'name="delta"' not in page and "Save" not in page
    assert staff.post(f"/admin/widgets/stockmovement/{movement.pk}/delete/", {"post": "yes"}).status_code == 403
    assert StockMovement.objects.filter(pk=movement.pk).exists()


class TestCategoryAdmin:
    def test_add_derives_the_slug(self, staff):
        response = staff.post("/admin/widgets/category/add/", {"name": "Garden Tools", "description": ""})

        assert response.status_code == 302
        assert Category.objects.get().slug == "garden-tools"

    def test_name_clashing_on_slug_is_a_form_error(self, staff, create_category):
        create_category(name="Garden Tools")

        response = staff.post("/admin/widgets/category/add/", {"name": "garden tools", "description": ""})

        assert response.status_code == 200
        assert "garden-tools" in response.content.decode()
        assert Category.objects.count() == 1

    def test_category_with_widgets_is_not_deleted(self, staff, widgets):
        tools = Category.objects.get(name="Tools")

        response = staff.post(f"/admin/widgets/category/{tools.pk}/delete/", {"post": "yes"})

        assert response.status_code == 200
        assert "Cannot delete category" in response.content.decode()
        assert Category.objects.filter(pk=tools.pk).exists()


class TestWidgetDeletion:
    def test_widget_without_history_is_deleted(self, staff, create_widget):
        widget = create_widget()

        response = staff.post(f"/admin/widgets/widget/{widget['id']}/delete/", {"post": "yes"})

        assert response.status_code == 302
        assert not Widget.objects.filter(pk=widget["id"]).exists()

    def test_widget_with_history_is_kept_with_a_message(self, staff, widgets):
        low, _ = widgets

        response = staff.post(f"/admin/widgets/widget/{low['id']}/delete/", {"post": "yes"}, follow=True)

        assert response.status_code == 200
        page = response.content.decode()
        assert "Cannot delete widget" in page
        assert "archive it instead" in page
        assert Widget.objects.filter(pk=low["id"]).exists()

    def test_bulk_delete_keeps_widgets_with_history(self, staff, widgets, create_widget):
        low, plenty = widgets
        spare = create_widget()

        response = staff.post(
            "/admin/widgets/widget/",
            {"action": "delete_selected", "_selected_action": [low["id"], plenty["id"], spare["id"]], "post": "yes"},
            follow=True,
        )

        assert response.status_code == 200
        assert Widget.objects.filter(pk__in=[low["id"], plenty["id"]]).count() == 2

    def test_bulk_delete_of_widgets_without_history_deletes_them(self, staff, create_widget):
        first, second = create_widget(), create_widget()

        response = staff.post(
            "/admin/widgets/widget/",
            {"action": "delete_selected", "_selected_action": [first["id"], second["id"]], "post": "yes"},
        )

        assert response.status_code == 302
        assert not Widget.objects.filter(pk__in=[first["id"], second["id"]]).exists()
