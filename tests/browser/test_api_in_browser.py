"""The browsable API and the API docs in a real browser."""

import json
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import PASSWORD, screenshot
from widgets import services
from widgets.models import Widget

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_browsable_api_login_filter_form_and_adjustment_form(browser_page, admin_user):
    bolt = services.create_widget(sku="BOLT-9", name="Hex bolt", stock=12)
    services.create_widget(sku="NUT-9", name="Wing nut", stock=3)
    page = browser_page

    page.goto(page.url_for("/api-auth/login/?next=/api/widgets/"))
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", PASSWORD)
    page.click("#submit-id-submit")
    page.wait_for_url("**/api/widgets/")
    assert admin_user.username in page.locator(".navbar").inner_text()

    page.get_by_role("button", name="Filters").click()
    filters = page.locator("#filtersModal")
    filters.locator("input[name=search]").fill("bolt")
    screenshot(page, "api-filter-form")
    filters.locator("button[type=submit]", has_text="Submit").click()

    page.wait_for_url("**search=bolt**")
    body = page.locator(".response-info").inner_text()
    assert "BOLT-9" in body and "NUT-9" not in body
    screenshot(page, "api-filtered-list")

    page.goto(page.url_for(f"/api/widgets/{bolt.pk}/adjust/"))
    form = page.locator("#post-object-form form")
    form.locator("input[name=delta]").fill("-5")
    form.locator("select[name=reason]").select_option("sold")
    form.locator("input[name=note]").fill("counter sale")
    with page.expect_navigation():
        form.get_by_role("button", name="POST").click()
    response = page.locator(".response-info").inner_text()
    assert "HTTP 201 Created" in response
    assert '"stock_after": 7' in response
    assert Widget.objects.get(pk=bolt.pk).stock == 7
    screenshot(page, "api-adjusted")

    # The page after the POST offers the same form again, and it works again.
    form = page.locator("#post-object-form form")
    form.locator("input[name=delta]").fill("-3")
    form.locator("select[name=reason]").select_option("sold")
    with page.expect_navigation():
        form.get_by_role("button", name="POST").click()
    response = page.locator(".response-info").inner_text()
    assert "HTTP 201 Created" in response
    assert '"stock_after": 4' in response
    assert Widget.objects.get(pk=bolt.pk).stock == 4
    screenshot(page, "api-adjusted-again")


def test_raw_data_form_posts_its_prefill_once_the_required_values_are_typed_in(browser_page, admin_user):
    bolt = services.create_widget(sku="BOLT-8", name="Hex bolt", stock=12)
    page = browser_page
    page.goto(page.url_for(f"/api-auth/login/?next=/api/widgets/{bolt.pk}/adjust/"))
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", PASSWORD)
    page.click("#submit-id-submit")
    page.wait_for_url(f"**/api/widgets/{bolt.pk}/adjust/")

    page.get_by_role("link", name="Raw data").click()
    content = page.locator("#post-generic-content-form textarea[name=_content]")
    prefill = json.loads(content.input_value())
    content.fill(json.dumps({**prefill, "delta": 5, "reason": "received"}))
    with page.expect_navigation():
        page.locator("#post-generic-content-form").get_by_role("button", name="POST").click()
    assert "HTTP 201 Created" in page.locator(".response-info").inner_text()
    assert Widget.objects.get(pk=bolt.pk).stock == 17


def test_api_docs_render_from_local_assets_only(browser_page):
    page = browser_page
    requested, failed = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("requestfailed", lambda request: failed.append(request.url))

    page.goto(page.url_for("/api/docs/"))
    page.locator(".opblock").first.wait_for()
    page.wait_for_load_state("networkidle")

    assert page.locator(".opblock").count() > 10
    assert page.locator(".opblock-summary-path", has_text="/api/widgets/{id}/adjust/").count() == 1
    assert failed == []
    own_origin = urlsplit(page.url_for("/"))[:2]
    assert [url for url in requested if urlsplit(url)[:2] != own_origin and not url.startswith("data:")] == []
    screenshot(page, "api-docs")
