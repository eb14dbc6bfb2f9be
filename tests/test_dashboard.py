"""The staff dashboard and each widget's stock-history chart, through the admin pages."""

import re
from contextlib import contextmanager
from datetime import timedelta
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import make_user
from widgets import services

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/widgets/widget/dashboard/"


@contextmanager
def days_ago(days):
    """Write movements as if it were ``days`` days ago (created_at is set on insert)."""
    when = timezone.now() - timedelta(days=days)
    with mock.patch("django.utils.timezone.now", return_value=when):
        yield


def staff_client(role="viewer"):
    client = Client()
    client.force_login(make_user(role, is_staff=True))
    return client


def chart_points(html, chart_id, series):
    """{label: value} of one series' data points in a rendered chart."""
    chart = html.split(f'id="{chart_id}"', 1)[1].split("</figure>", 1)[0]
    group = chart.split(f'data-series="{series}"', 1)[1].split("</g>", 1)[0]
    return {label: int(value) for label, value in re.findall(r'data-label="([^"]+)" data-value="(-?\d+)"', group)}


def figure(html, name):
    return re.search(rf'id="figure-{name}">([^<]*)<', html).group(1)


class TestDashboard:
    def test_admin_index_links_to_the_dashboard(self):
        response = staff_client().get("/admin/")

        assert response.status_code == 200
        assert DASHBOARD in response.content.decode()

    def test_totals_count_widgets_units_and_value(self, create_widget):
        create_widget(stock=10, price="2.50")
        create_widget(stock=3, price="10.00", is_active=False)
        create_widget(stock=0, price="99.99")

        html = staff_client().get(DASHBOARD).content.decode()

        assert figure(html, "widgets") == "3"
        assert figure(html, "units") == "13"
        assert figure(html, "value") == "55.00"  # 10 x 2.50 + 3 x 10.00

    def test_the_low_stock_figure_counts_active_widgets_by_available_units(self, create_widget):
        create_widget(stock=2, reorder_level=5)  # low by stock alone
        held_down = create_widget(stock=10, reorder_level=5)
        create_widget(stock=10, reorder_level=5)  # not low
        create_widget(stock=0, reorder_level=5, is_active=False)  # inactive: not counted
        items = [{"widget": held_down["id"], "quantity": 6}]
        services.create_reservation(reference="order-1", items=items, ttl_seconds=600)  # 10 - 6 = 4 <= 5

        html = staff_client().get(DASHBOARD).content.decode()

        assert figure(html, "low-stock") == "2"
        assert (figure(html, "reserved"), figure(html, "available")) == ("6", "16")

    def test_low_stock_lists_active_widgets_at_or_below_reorder_level_with_links(self, create_widget):
        low = create_widget(sku="LOW-1", stock=2, reorder_level=5)
        at_level = create_widget(sku="LOW-2", stock=5, reorder_level=5)
        create_widget(sku="OK-1", stock=6, reorder_level=5)
        create_widget(sku="ARCHIVED-1", stock=0, reorder_level=5, is_active=False)

        html = staff_client().get(DASHBOARD).content.decode()

        table = html.split('id="low-stock-table"', 1)[1].split("</table>", 1)[0]
        assert re.findall(r">([A-Z0-9-]+)</a>", table) == ["LOW-1", "LOW-2"]  # furthest below first
        assert f"/admin/widgets/widget/{low['id']}/change/" in table
        assert f"/admin/widgets/widget/{at_level['id']}/change/" in table
        assert figure(html, "low-stock") == "2"
        assert "?low_stock=yes&amp;is_active__exact=1" in html

    def test_low_stock_list_is_capped_and_links_to_the_filtered_list(self, create_widget):
        for n in range(12):
            create_widget(sku=f"LOW-{n}", stock=0, reorder_level=1)

        html = staff_client().get(DASHBOARD).content.decode()

        table = html.split('id="low-stock-table"', 1)[1].split("</table>", 1)[0]
        assert table.count("<tr>") == 1 + 10
        assert "All 12 low-stock widgets" in html

    def test_flow_chart_has_a_point_per_day_with_units_received_and_sold(self, clerk, create_widget):
        widget = create_widget(stock=100)
        with days_ago(3):
            services.adjust_stock(widget_id=widget["id"], delta=7, reason="received")
            services.adjust_stock(widget_id=widget["id"], delta=5, reason="received")
            services.adjust_stock(widget_id=widget["id"], delta=-4, reason="sold")
            services.adjust_stock(widget_id=widget["id"], delta=-1, reason="damaged")  # neither
        with days_ago(31):  # outside the window
            services.adjust_stock(widget_id=widget["id"], delta=50, reason="received")
        services.adjust_stock(widget_id=widget["id"], delta=-6, reason="sold")

        html = staff_client().get(DASHBOARD).content.decode()

        received = chart_points(html, "flow-chart", "Received")
        sold = chart_points(html, "flow-chart", "Sold")
        today = timezone.localdate()
        label = lambda days: f"{today - timedelta(days=days):%b %d}"  # noqa: E731
        assert len(received) == len(sold) == 30
        assert received[label(3)] == 12 and sold[label(3)] == 4
        assert received[label(0)] == 0 and sold[label(0)] == 6
        assert sum(received.values()) == 12 and sum(sold.values()) == 10
        assert '<svg viewBox="0 0 640 240" role="img"' in html

    def test_dashboard_query_count_does_not_grow_with_data(self, create_widget, django_assert_max_num_queries):
        client = staff_client()
        for n in range(30):
            widget = create_widget(stock=5, reorder_level=10 if n % 2 else 0)
            services.adjust_stock(widget_id=widget["id"], delta=-1, reason="sold")

        # Session, user, permissions, then one query each: totals, low-stock page, flow.
        with django_assert_max_num_queries(8):
            response = client.get(DASHBOARD)

        assert response.status_code == 200

    def test_staff_without_view_permission_gets_403(self):
        response = staff_client(role=None).get(DASHBOARD)

        assert response.status_code == 403

    def test_anonymous_is_sent_to_the_admin_login(self):
        response = Client().get(DASHBOARD)

        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


class TestWidgetStockHistoryChart:
    def test_change_page_charts_stock_after_each_movement_oldest_first(self, create_widget):
        widget = create_widget(stock=10)
        services.adjust_stock(widget_id=widget["id"], delta=5, reason="received")
        services.adjust_stock(widget_id=widget["id"], delta=-12, reason="sold")

        html = staff_client().get(f"/admin/widgets/widget/{widget['id']}/change/").content.decode()

        chart = html.split('id="stock-history-chart"', 1)[1].split("</svg>", 1)[0]
        assert re.findall(r'data-value="(\d+)"', chart) == ["10", "15", "3"]

    def test_history_chart_shows_at_most_the_newest_100_movements(self, create_widget, django_assert_max_num_queries):
        widget = create_widget(stock=1)
        for _ in range(105):
            services.adjust_stock(widget_id=widget["id"], delta=1, reason="received")
        client = staff_client()

        with django_assert_max_num_queries(20):
            html = client.get(f"/admin/widgets/widget/{widget['id']}/change/").content.decode()

        values = re.findall(r'data-value="(\d+)"', html.split('id="stock-history-chart"', 1)[1].split("</svg>", 1)[0])
        assert values == [str(n) for n in range(7, 107)]

    def test_widget_without_movements_has_no_chart(self, create_widget):
        widget = create_widget(stock=0)

        html = staff_client().get(f"/admin/widgets/widget/{widget['id']}/change/").content.decode()

        assert "Stock history" not in html
        assert widget["sku"] in html
