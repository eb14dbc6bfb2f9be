"""The browsable API as a person uses it: session login, HTML pages, HTML forms with CSRF."""
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
