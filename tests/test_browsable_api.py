"""The browsable API as a person uses it: session login, HTML pages, HTML forms with CSRF."""

import html
import json
import re

import pytest
from django.test import Client

from tests.conftest import make_user
from widgets.models import StockMovement, Widget

pytestmark = pytest.mark.django_db

HTML = {"HTTP_ACCEPT": "text/html"}


def csrf_token(response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode())
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture
def browser():
    """A browser that sends CSRF tokens the way a real one does, and is refused without."""
    return Client(enforce_csrf_checks=True)


def log_in(browser, user):
    page = browser.get("/api-auth/login/?next=/api/")
    response = browser.post(
        "/api-auth/login/?next=/api/",
        {"username": user.username, "password": "pw-Secret-123", "csrfmiddlewaretoken": csrf_token(page)},
    )
    assert response.status_code == 302, response.content
    assert response["Location"] == "/api/"


def test_login_page_renders(browser):
    response = browser.get("/api-auth/login/")

    assert response.status_code == 200
    assert 'name="username"' in response.content.decode()


def test_widget_list_shows_the_filter_form(browser, create_widget):
    create_widget(name="Listed spanner")
    log_in(browser, make_user("viewer"))

    response = browser.get("/api/widgets/", **HTML)

    page = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "Listed spanner" in page
    assert "Filters" in page
    for name in ["search", "category", "is_active", "low_stock", "min_price", "max_stock", "updated_after"]:
        assert f'name="{name}"' in page, name


def test_adjust_html_form_records_a_movement_as_the_signed_in_user(browser, create_widget):
    widget = create_widget(stock=10)
    clerk = make_user("clerk")
    log_in(browser, clerk)
    url = f"/api/widgets/{widget['id']}/adjust/"
    form_page = browser.get(url, **HTML)
    assert form_page.status_code == 405  # GET is not offered, but the page still carries the form
    assert 'name="delta"' in form_page.content.decode()

    response = browser.post(
        url,
        {"delta": "-4", "reason": "sold", "note": "counter sale", "csrfmiddlewaretoken": csrf_token(form_page)},
        **HTML,
    )

    assert response.status_code == 201, response.content
    movement = StockMovement.objects.get(widget_id=widget["id"], reason="sold")
    assert (movement.delta, movement.stock_after, movement.created_by) == (-4, 6, clerk)
    assert Widget.objects.get(pk=widget["id"]).stock == 6


def test_session_post_without_csrf_token_is_refused(browser, create_widget):
    widget = create_widget(stock=10)
    log_in(browser, make_user("clerk"))

    response = browser.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": "-4", "reason": "sold"})

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert Widget.objects.get(pk=widget["id"]).stock == 10


def raw_data_prefill(page) -> dict:
    """The JSON the browsable API's Raw data tab offers to send."""
    match = re.search(r'<textarea[^>]*name="_content"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, "no raw data form on the page"
    return json.loads(html.unescape(match.group(1)))


def test_adjust_page_offers_the_form_again_after_a_successful_post(browser, create_widget):
    widget = create_widget(stock=10)
    log_in(browser, make_user("clerk"))
    url = f"/api/widgets/{widget['id']}/adjust/"
    page = browser.get(url, **HTML)

    for expected_stock in (8, 6):
        page = browser.post(
            url, {"delta": "-2", "reason": "sold", "note": "", "csrfmiddlewaretoken": csrf_token(page)}, **HTML
        )

        assert page.status_code == 201, page.content
        form = page.content.decode().split('id="post-object-form"', 1)[1]
        assert 'name="delta"' in form and 'name="reason"' in form
        assert raw_data_prefill(page.content.decode()) == {"delta": None, "reason": None, "note": ""}
        assert Widget.objects.get(pk=widget["id"]).stock == expected_stock


@pytest.mark.parametrize(
    "url, typed_in",
    [
        ("/api/auth/token/", {"username": "clerk-1", "password": "pw-Secret-123"}),
        ("/api/widgets/", {"name": "Prefilled widget"}),
        ("/api/categories/", {"name": "Prefilled category"}),
        ("/api/widgets/{id}/adjust/", {"delta": 3, "reason": "received"}),
        ("/api/adjustments/", {"items": [{"widget": "{id}", "delta": 3, "reason": "received", "note": ""}]}),
    ],
)
def test_raw_data_prefill_is_accepted_once_the_required_values_are_typed_in(create_widget, url, typed_in):
    widget = create_widget(stock=5)
    user = make_user(is_superuser=True, is_staff=True, username="clerk-1")
    browser = Client()
    browser.force_login(user)
    url = url.replace("{id}", str(widget["id"]))
    prefill = raw_data_prefill(browser.get(url, **HTML).content.decode())
    assert set(typed_in) <= set(prefill), prefill
    if "items" in typed_in:
        typed_in["items"][0]["widget"] = widget["id"]
        assert set(typed_in["items"][0]) == set(prefill["items"][0])

    response = browser.post(url, json.dumps({**prefill, **typed_in}), content_type="application/json")

    assert response.status_code == 201, response.content


def test_api_root_is_a_home_page_with_one_line_per_collection_and_page(browser):
    log_in(browser, make_user("viewer"))

    links = browser.get("/api/", HTTP_ACCEPT="application/json").json()
    page = browser.get("/api/", **HTML).content.decode()

    for key in [
        "categories",
        "widgets",
        "movements",
        "changes",
        "auth/tokens",
        "adjustments",
        "auth/token",
        "docs",
        "redoc",
        "schema",
        "admin",
    ]:
        assert key in links, key
        assert f'href="{links[key]}"' in page, key
    assert links["docs"].endswith("/api/docs/") and links["admin"].endswith("/admin/")
    assert "The default basic root view" not in page
    assert "<h1>Widget Inventory API</h1>" in page
    description = page.split('<div class="pull-left">', 1)[1].split("</div>", 1)[0]
    assert description.count("<li>") == len(links)


def test_view_descriptions_render_as_markdown(browser):
    log_in(browser, make_user("viewer"))

    page = browser.get("/api/widgets/", **HTML).content.decode()
    changes = browser.get("/api/changes/", **HTML).content.decode()

    assert "<code>adjust</code>" in page
    assert "<code>/api/movements/</code>" in changes
    assert "``" not in page and "``" not in changes


def test_favicon_is_served_at_the_site_root(browser):
    response = browser.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file


def test_widget_html_form_creates_an_active_widget_as_offered(browser):
    log_in(browser, make_user("manager"))
    page = browser.get("/api/widgets/", **HTML)
    checkbox = re.search(r'<input[^>]*name="is_active"[^>]*>', page.content.decode()).group(0)
    assert "checked" in checkbox

    response = browser.post(
        "/api/widgets/",
        {"name": "Form widget", "is_active": "true", "csrfmiddlewaretoken": csrf_token(page)},
        **HTML,
    )

    assert response.status_code == 201, response.content
    assert Widget.objects.get(name="Form widget").is_active is True
