"""Staff pages in a real browser: log in, filter, adjust stock, dashboard charts, CSV import."""

import re
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from tests.browser.conftest import log_in_to_admin, screenshot
from widgets import services
from widgets.models import Widget

# serialized_rollback: the live server needs real commits; the roles from the data
# migration are restored afterwards for the tests that follow.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def widget(sku, **fields):
    return services.create_widget(sku=sku, name=fields.pop("name", f"Widget {sku}"), **fields)


def test_admin_login_shows_the_styled_index(browser_page, admin_user):
    page = browser_page
    stylesheets = []
    page.on("response", lambda r: stylesheets.append((r.url, r.status)) if r.url.endswith(".css") else None)

    log_in_to_admin(page, admin_user)

    assert page.locator("#site-name").inner_text() == "Django administration"
    assert page.get_by_role("link", name="Stock dashboard").is_visible()
    assert {status for url, status in stylesheets if url.endswith("/admin/css/base.css")} == {200}
    # The admin stylesheet really applied: the header has its coloured background.
    header_background = page.locator("#header").evaluate("el => getComputedStyle(el).backgroundColor")
    assert header_background not in ("rgba(0, 0, 0, 0)", "transparent")
    screenshot(page, "admin-index")


def test_low_stock_filter_finds_only_low_stock_widgets(browser_page, admin_user):
    widget("LOW-1", stock=1, reorder_level=5)
    widget("PLENTY-1", stock=50, reorder_level=5)
    page = browser_page
    log_in_to_admin(page, admin_user)

    page.goto(page.url_for("/admin/widgets/widget/"))
    page.get_by_role("link", name="Low stock (available at or below reorder level)").click()

    page.wait_for_url("**low_stock=yes**")
    skus = page.locator("#result_list tbody th a").all_inner_texts()
    assert skus == ["LOW-1"]
    screenshot(page, "admin-low-stock-filter")


def test_adjusting_stock_in_the_admin_records_a_movement(browser_page, admin_user):
    target = widget("ADJ-1", stock=5)
    page = browser_page
    log_in_to_admin(page, admin_user)
    page.goto(page.url_for(f"/admin/widgets/widget/{target.pk}/change/"))

    page.get_by_role("link", name="Adjust stock").click()
    page.fill("#id_delta", "3")
    page.select_option("#id_reason", "received")
    page.fill("#id_note", "delivery 42")
    screenshot(page, "admin-adjust-stock-form")
    page.click("input[type=submit]")

    page.wait_for_url(f"**/admin/widgets/widget/{target.pk}/change/")
    assert "Stock of ADJ-1 changed by +3; now 8." in page.locator(".messagelist").inner_text()
    newest = page.locator(".inline-related tbody tr").first.inner_text()
    assert "delivery 42" in newest and "Received" in newest and "8" in newest
    assert Widget.objects.get(pk=target.pk).stock == 8
    screenshot(page, "admin-adjusted-widget")


def test_dashboard_chart_is_drawn_with_data_points(browser_page, admin_user):
    stocked = widget("DASH-1", name="Flange", stock=40, reorder_level=10)
    widget("DASH-LOW", stock=2, reorder_level=10)
    for days, delta, reason in [(20, 25, "received"), (12, -9, "sold"), (5, 14, "received"), (2, -30, "sold")]:
        with mock.patch("django.utils.timezone.now", return_value=timezone.now() - timedelta(days=days)):
            services.adjust_stock(widget_id=stocked.pk, delta=delta, reason=reason)
    services.adjust_stock(widget_id=stocked.pk, delta=-6, reason="sold")
    page = browser_page
    log_in_to_admin(page, admin_user)

    page.get_by_role("link", name="Stock dashboard").first.click()

    chart = page.locator("#flow-chart svg")
    chart.wait_for()
    box = chart.bounding_box()
    assert box["width"] > 500 and box["height"] > 150
    assert page.locator("#flow-chart circle.point").count() == 60  # 30 days x 2 series
    values = page.locator("#flow-chart [data-series=Received] circle.point").evaluate_all(
        "points => points.map(p => Number(p.dataset.value))"
    )
    assert sorted(v for v in values if v) == [14, 25]
    assert page.locator("#low-stock-table tbody a").all_inner_texts() == ["DASH-LOW"]
    assert page.locator("#figure-units").inner_text() == str(Widget.objects.get(pk=stocked.pk).stock + 2)
    screenshot(page, "dashboard")

    # A phone-sized screen: the chart shrinks with the page instead of overflowing it.
    page.set_viewport_size({"width": 375, "height": 800})
    narrow = chart.bounding_box()
    assert 200 < narrow["width"] <= 375
    screenshot(page, "dashboard-narrow")

    page.goto(page.url_for(f"/admin/widgets/widget/{stocked.pk}/change/"))
    history = page.locator("#stock-history-chart circle.point")
    assert history.count() == 6  # initial + 5 movements
    assert history.last.get_attribute("data-value") == "34"
    screenshot(page, "widget-stock-history")


def test_importing_a_csv_through_the_admin_page(browser_page, admin_user):
    widget("OLD-1", name="Old name", stock=4)
    page = browser_page
    log_in_to_admin(page, admin_user)
    page.goto(page.url_for("/admin/widgets/widget/"))
    page.get_by_role("link", name="Import CSV").click()
    csv_file = {
        "name": "widgets.csv",
        "mimeType": "text/csv",
        "buffer": b"sku,name,price,stock\nOLD-1,New name,1.50,10\nNEW-1,Brand new,2.00,3\n",
    }

    page.set_input_files("#id_file", csv_file)  # dry run is ticked by default
    # The file has no version column: changing OLD-1's stock from it is a deliberate choice.
    page.check("#id_stock_corrections")
    page.click("#import-form input[type=submit]")
    preview = page.locator("#import-preview").inner_text()
    assert "1 to create" in preview and "stock 4 → 10" in preview
    assert not Widget.objects.filter(sku="NEW-1").exists()
    screenshot(page, "admin-import-dry-run")

    # The checked file was kept: applying it needs no second upload.
    page.click("#import-apply-form input[type=submit]")

    page.wait_for_url("**/admin/widgets/widget/")
    assert (
        "Imported: 1 created, 1 updated, 1 stock corrections, 0 unchanged." in page.locator(".messagelist").inner_text()
    )
    assert set(page.locator("#result_list tbody th a").all_inner_texts()) == {"OLD-1", "NEW-1"}
    assert re.search(r"New name", page.locator("#result_list").inner_text())
    assert Widget.objects.get(sku="OLD-1").stock == 10
    screenshot(page, "admin-imported")
