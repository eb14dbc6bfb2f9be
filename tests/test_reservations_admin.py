"""Reservations in the admin: the list (status, search, release action), and reserved and
available units on the widget pages and the stock dashboard."""

import io
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.conftest import make_user
from widgets import services
from widgets.models import ChangeLogEntry, Reservation

pytestmark = pytest.mark.django_db

LIST = "/admin/widgets/reservation/"
DASHBOARD = "/admin/widgets/widget/dashboard/"


def staff(role):
    client = Client()
    client.force_login(make_user(role, is_staff=True))
    return client


@pytest.fixture
def held(create_widget, clerk):
    """A widget (stock 10, reorder level 3) with 4 units held by 'order-held', and a
    released reservation 'order-gone'."""
    widget = create_widget(stock=10, reorder_level=3, sku="HELD-1")
    kept = clerk.post(
        "/api/reservations/",
        {"reference": "order-held", "items": [{"widget": widget["id"], "quantity": 4}]},
        format="json",
    ).json()
    gone = clerk.post(
        "/api/reservations/",
        {"reference": "order-gone", "items": [{"widget": widget["id"], "quantity": 1}]},
        format="json",
    ).json()
    clerk.post(f"/api/reservations/{gone['id']}/release/", {}, format="json")
    return widget, kept, gone


def listed(html):
    return re.findall(r'<th class="field-reference"><a [^>]*>([^<]+)</a>', html)


class TestReservationList:
    def test_lists_reservations_with_their_status(self, held):
        html = staff("viewer").get(LIST).content.decode()

        assert sorted(listed(html)) == ["order-gone", "order-held"]
        assert "released" in html and "active" in html

    @pytest.mark.parametrize(
        "status, expected", [("active", ["order-held"]), ("released", ["order-gone"]), ("expired", [])]
    )
    def test_filter_by_status(self, held, status, expected):
        response = staff("viewer").get(LIST, {"status": status})

        assert response.status_code == 200
        assert listed(response.content.decode()) == expected

    def test_expired_reservations_recorded_or_not_are_listed_as_expired(self, held, clerk, create_widget, time_machine):
        widget, kept, _ = held
        # Two days back, so that no reservation expired here is held again at the real time.
        time_machine.move_to(timezone.now() - timedelta(days=2), tick=False)
        old = clerk.post(
            "/api/reservations/",
            {"reference": "order-old", "ttl_seconds": 60, "items": [{"widget": widget["id"], "quantity": 1}]},
            format="json",
        ).json()
        time_machine.move_to(timezone.now() + timedelta(seconds=61), tick=False)
        call_command("expire_reservations", stdout=io.StringIO())  # order-old recorded as expired
        recent = clerk.post(
            "/api/reservations/",
            {"reference": "order-new", "ttl_seconds": 60, "items": [{"widget": widget["id"], "quantity": 1}]},
            format="json",
        ).json()
        time_machine.move_to(timezone.now() + timedelta(seconds=61), tick=False)  # order-new expired, not recorded
        assert Reservation.objects.get(pk=old["id"]).status == "expired"
        assert Reservation.objects.get(pk=recent["id"]).status == "active"
        client = staff("clerk")

        assert sorted(listed(client.get(LIST, {"status": "expired"}).content.decode())) == ["order-new", "order-old"]
        assert listed(client.get(LIST, {"status": "active"}).content.decode()) == ["order-held"]
        assert re.search(r"order-old</a></th><td[^>]*>expired<", client.get(LIST).content.decode())
        response = client.post(LIST, {"action": "release", "_selected_action": [old["id"]]}, follow=True)
        assert any("expired" in str(m) for m in response.context["messages"])
        assert Reservation.objects.get(pk=old["id"]).status == "expired"

    def test_search_by_reference(self, held):
        html = staff("viewer").get(LIST, {"q": "held"}).content.decode()

        assert listed(html) == ["order-held"]

    def test_filter_by_widget_links_from_the_widget_page(self, held):
        widget, _, _ = held
        page = staff("viewer").get(f"/admin/widgets/widget/{widget['id']}/change/").content.decode()
        link = re.search(r'href="(/admin/widgets/reservation/\?[^"]+)"', page).group(1).replace("&amp;", "&")

        assert listed(staff("viewer").get(link).content.decode()) == ["order-held"]

    def test_release_action_releases_through_the_service(self, held, clerk):
        widget, kept, gone = held
        client = staff("clerk")

        response = client.post(LIST, {"action": "release", "_selected_action": [kept["id"], gone["id"]]}, follow=True)

        assert response.status_code == 200
        messages = [str(m) for m in response.context["messages"]]
        assert "Released 1 reservation(s)." in messages
        assert any("is released" in m for m in messages)  # the one already released is refused
        assert Reservation.objects.get(pk=kept["id"]).status == "released"
        entry = ChangeLogEntry.objects.filter(object_type="reservation", object_id=kept["id"]).first()
        assert (entry.action, entry.changes["status"]) == ("update", ["active", "released"])
        assert clerk.get(f"/api/widgets/{widget['id']}/").json()["reserved"] == 0

    def test_a_viewer_has_no_release_action(self, held):
        widget, kept, _ = held
        client = staff("viewer")

        assert 'value="release"' not in client.get(LIST).content.decode()
        client.post(LIST, {"action": "release", "_selected_action": [kept["id"]]})
        assert Reservation.objects.get(pk=kept["id"]).status == "active"

    def test_the_change_page_shows_the_items_read_only(self, held):
        widget, kept, _ = held
        html = staff("clerk").get(f"{LIST}{kept['id']}/change/").content.decode()

        assert "order-held" in html and "HELD-1" in html
        assert 'name="reference"' not in html


class TestWidgetPages:
    def test_changelist_and_change_page_show_reserved_and_available(self, held):
        widget, _, _ = held
        client = staff("viewer")

        changelist = client.get("/admin/widgets/widget/").content.decode()
        change = client.get(f"/admin/widgets/widget/{widget['id']}/change/").content.decode()

        # The list shows what is left to sell; what is held, and by whom, is on the page.
        assert '<td class="field-available">6</td>' in changelist
        assert re.search(r'field-reserved.*?<div class="readonly">4 <a', change, re.S)
        assert re.search(r'field-available.*?<div class="readonly">6</div>', change, re.S)

    def test_changelist_sorts_by_available(self, held, create_widget):
        create_widget(stock=8, sku="EIGHT-1")
        create_widget(stock=5, sku="FIVE-1")
        client = staff("viewer")
        column = 1 + ["sku", "name", "category", "stock", "available"].index("available")

        html = client.get("/admin/widgets/widget/", {"o": str(column)}).content.decode()

        # HELD-1 has 10 in stock, 4 of them reserved: 6 available.
        assert re.findall(r'<th class="field-sku"><a [^>]*>([^<]+)</a>', html) == ["FIVE-1", "HELD-1", "EIGHT-1"]

    def test_low_stock_filter_compares_available(self, held, create_widget):
        create_widget(stock=10, reorder_level=3, sku="FREE-1")
        client = staff("viewer")

        low = client.get("/admin/widgets/widget/", {"low_stock": "yes"}).content.decode()
        high = client.get("/admin/widgets/widget/", {"low_stock": "no"}).content.decode()

        # HELD-1: 10 in stock, 4 reserved: 6 available, above its level of 3.
        assert "HELD-1" not in low and "HELD-1" in high
        services.create_reservation(reference="more", items=[{"widget": held[0]["id"], "quantity": 3}])
        low = client.get("/admin/widgets/widget/", {"low_stock": "yes"}).content.decode()
        assert "HELD-1" in low and "FREE-1" not in low

    def test_admin_adjust_cannot_take_reserved_units(self, held):
        widget, _, _ = held
        client = staff("clerk")

        response = client.post(f"/admin/widgets/widget/{widget['id']}/adjust/", {"delta": -7, "reason": "damaged"})

        assert response.status_code == 200
        assert "6 available" in response.content.decode()


class TestDashboard:
    def figure(self, html, name):
        return re.search(rf'id="figure-{name}">([^<]*)<', html).group(1)

    def test_dashboard_shows_units_reserved_and_available(self, held, create_widget):
        create_widget(stock=5)

        html = staff("viewer").get(DASHBOARD).content.decode()

        assert (self.figure(html, "units"), self.figure(html, "reserved"), self.figure(html, "available")) == (
            "15",
            "4",
            "11",
        )

    def test_needs_reordering_counts_available_units(self, held, create_widget):
        widget, _, _ = held
        services.create_reservation(reference="big", items=[{"widget": widget["id"], "quantity": 5}])

        html = staff("viewer").get(DASHBOARD).content.decode()

        table = html.split('id="low-stock-table"', 1)[1].split("</table>", 1)[0]
        assert re.findall(r">([A-Z0-9-]+)</a>", table) == ["HELD-1"]
        assert "<td>10</td>\n              <td>9</td>\n              <td>1</td>" in table
        assert self.figure(html, "low-stock") == "1"

    def test_expired_reservations_no_longer_count(self, held, time_machine):
        time_machine.move_to(timezone.now() + timedelta(hours=1), tick=False)

        html = staff("viewer").get(DASHBOARD).content.decode()

        assert self.figure(html, "reserved") == "0"
