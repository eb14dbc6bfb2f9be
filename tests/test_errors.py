"""Errors under /api/: JSON for API clients, HTML for browsers; authentication and roles.

The full per-endpoint permission matrix lives in its own module; here each role's
basic behaviour is shown once.
"""

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from rest_framework.test import APIClient

from widgets import services
from widgets.models import Category, StockMovement, Widget

pytestmark = pytest.mark.django_db

API_ACCEPTS = {"json": "application/json", "any": "*/*", "none": None}
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def get(client, url, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    return client.get(url, **headers)


def assert_json_error(response, status, code=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["detail"]
    if code:
        assert body["code"] == code
    return body


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request, settings):
    """Both ways: with DEBUG on (`make run`) Django's own error pages are HTML debug pages."""
    settings.DEBUG = request.param
    return request.param


@pytest.mark.usefixtures("debug")
@pytest.mark.parametrize("accept", list(API_ACCEPTS.values()), ids=list(API_ACCEPTS))
class TestApiClientsGetJson:
    def test_unknown_url_under_api_is_json_404(self, viewer, accept):
        assert_json_error(get(viewer, "/api/no-such-thing/", accept), 404, "not_found")

    def test_unknown_url_is_json_404_for_anonymous_too(self, anon, accept):
        assert_json_error(get(anon, "/api/widgets/1/nope/", accept), 404, "not_found")

    def test_method_not_offered_is_json_405(self, manager, accept):
        headers = {"HTTP_ACCEPT": accept} if accept else {}

        response = manager.delete("/api/widgets/", **headers)

        assert_json_error(response, 405, "method_not_allowed")

    def test_a_page_that_is_html_only_answers_json_406(self, anon, accept):
        headers = {"HTTP_ACCEPT": accept} if accept and accept != "*/*" else {"HTTP_ACCEPT": "application/json"}

        assert_json_error(anon.get("/api/docs/", **headers), 406, "not_acceptable")

    def test_anonymous_is_json_401_with_www_authenticate(self, anon, accept):
        response = get(anon, "/api/widgets/", accept)

        assert_json_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize("url", ["/api/", "/api/categories/", "/api/movements/"])
def test_every_api_endpoint_needs_authentication(anon, url):
    response = anon.get(url)

    assert_json_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Token realm="api"'


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/", "/api/redoc/"])
def test_schema_and_docs_are_public(anon, url):
    assert anon.get(url).status_code == 200


class TestBadRequests:
    def test_wrong_content_type_is_json_415_and_creates_nothing(self, manager):
        response = manager.post("/api/widgets/", "name=Spanner", content_type="text/plain")

        assert_json_error(response, 415, "unsupported_media_type")
        assert not Widget.objects.exists()

    def test_malformed_json_is_json_400(self, manager):
        response = manager.post("/api/widgets/", '{"name": "Spanner",', content_type="application/json")

        assert_json_error(response, 400, "parse_error")
        assert not Widget.objects.exists()

    def test_malformed_json_on_adjust_is_400_and_writes_nothing(self, clerk, create_widget):
        widget = create_widget(stock=3)

        response = clerk.post(f"/api/widgets/{widget['id']}/adjust/", "{delta: -1}", content_type="application/json")

        assert_json_error(response, 400, "parse_error")
        assert StockMovement.objects.filter(widget_id=widget["id"]).count() == 1

    def test_invalid_token_is_401(self, anon):
        anon.credentials(HTTP_AUTHORIZATION="Token wgi_not-a-real-key")

        assert_json_error(anon.get("/api/widgets/"), 401, "authentication_failed")


class TestServerErrors:
    @pytest.fixture
    def broken_adjust(self, monkeypatch):
        def explode(**kwargs):
            raise RuntimeError("secret-internal-detail")

        monkeypatch.setattr(services, "adjust_stock", explode)

    @pytest.mark.usefixtures("debug")
    @pytest.mark.parametrize("accept", list(API_ACCEPTS.values()), ids=list(API_ACCEPTS))
    def test_unexpected_error_is_json_500_without_traceback(self, clerk, create_widget, broken_adjust, accept):
        widget = create_widget(stock=1)
        clerk.raise_request_exception = False
        headers = {"HTTP_ACCEPT": accept} if accept else {}

        response = clerk.post(
            f"/api/widgets/{widget['id']}/adjust/", {"delta": 1, "reason": "received"}, format="json", **headers
        )

        body = assert_json_error(response, 500, "server_error")
        text = response.content.decode()
        assert "secret-internal-detail" not in text and "Traceback" not in text
        assert set(body) == {"detail", "code"}

    @pytest.mark.usefixtures("debug")
    def test_unexpected_error_outside_drf_is_json_500(self, anon, monkeypatch):
        def explode(self, request):
            raise RuntimeError("secret-internal-detail")

        # In a middleware, before any view: Django's own handler answers it.
        monkeypatch.setattr(SessionMiddleware, "process_request", explode)
        anon.raise_request_exception = False

        response = anon.get("/api/widgets/")

        assert_json_error(response, 500, "server_error")
        assert "secret-internal-detail" not in response.content.decode()

    def test_browser_gets_an_html_500(self, create_widget, broken_adjust, django_user_model):
        widget = create_widget(stock=1)
        client = APIClient(raise_request_exception=False)
        client.force_login(django_user_model.objects.create_user("browser", is_superuser=True))

        response = client.post(
            f"/api/widgets/{widget['id']}/adjust/", {"delta": 1, "reason": "received"}, HTTP_ACCEPT=BROWSER_ACCEPT
        )

        assert response.status_code == 500
        assert response["Content-Type"].startswith("text/html")
        assert "secret-internal-detail" not in response.content.decode()


class TestBrowsers:
    def test_browser_gets_the_browsable_api(self, client, django_user_model):
        client.force_login(django_user_model.objects.create_user("browser", is_superuser=True))

        response = client.get("/api/widgets/", HTTP_ACCEPT=BROWSER_ACCEPT)

        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        assert "Widget List" in response.content.decode()

    def test_browser_gets_an_html_404_for_unknown_urls(self, client):
        response = client.get("/api/no-such-thing/", HTTP_ACCEPT=BROWSER_ACCEPT)

        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")

    def test_browser_gets_html_for_api_errors_too(self, client, django_user_model):
        client.force_login(django_user_model.objects.create_user("browser", is_superuser=True))

        response = client.get("/api/widgets/999999/", HTTP_ACCEPT=BROWSER_ACCEPT)

        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")

    def test_unknown_url_outside_api_is_html(self, client):
        response = client.get("/no-such-page/")

        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")


class TestRoles:
    def test_user_without_role_sees_the_root_but_no_data(self, no_role):
        assert no_role.get("/api/").status_code == 200
        for url in ["/api/widgets/", "/api/categories/", "/api/movements/"]:
            assert_json_error(no_role.get(url), 403, "permission_denied")

    def test_viewer_reads_but_cannot_write(self, viewer, create_widget):
        widget = create_widget(stock=2)

        assert viewer.get("/api/widgets/").status_code == 200
        assert viewer.get("/api/movements/").status_code == 200
        assert viewer.get("/api/categories/").status_code == 200
        assert_json_error(viewer.post("/api/widgets/", {"name": "X"}, format="json"), 403)
        assert_json_error(
            viewer.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": 1, "reason": "received"}, format="json"),
            403,
        )
        assert Widget.objects.get(pk=widget["id"]).stock == 2

    def test_clerk_adjusts_but_cannot_edit_widgets(self, clerk, create_widget):
        widget = create_widget(stock=2)

        adjusted = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": 1, "reason": "received"}, format="json")
        assert adjusted.status_code == 201
        assert_json_error(clerk.patch(f"/api/widgets/{widget['id']}/", {"name": "Y"}, format="json"), 403)
        assert_json_error(clerk.post("/api/categories/", {"name": "Z"}, format="json"), 403)
        assert Widget.objects.get(pk=widget["id"]).name == widget["name"]

    def test_manager_edits_widgets_and_categories(self, manager, create_widget):
        widget = create_widget()

        assert manager.patch(f"/api/widgets/{widget['id']}/", {"name": "Y"}, format="json").status_code == 200
        assert manager.post("/api/categories/", {"name": "Z"}, format="json").status_code == 201
        assert manager.delete(f"/api/widgets/{widget['id']}/").status_code == 204

    def test_superuser_may_do_everything(self, superuser):
        created = superuser.post("/api/widgets/", {"name": "S", "stock": 1}, format="json")
        assert created.status_code == 201
        widget_id = created.json()["id"]
        assert (
            superuser.post(
                f"/api/widgets/{widget_id}/adjust/", {"delta": 2, "reason": "received"}, format="json"
            ).status_code
            == 201
        )
        assert superuser.post("/api/categories/", {"name": "C"}, format="json").status_code == 201
        assert superuser.delete(f"/api/categories/{Category.objects.get().pk}/").status_code == 204
        assert superuser.get("/api/movements/").json()["count"] == 2


class TestMethodNotOfferedIsNever403:
    """A method an endpoint lacks is 405 for every authenticated user, roles or not."""

    @pytest.mark.parametrize("user", ["no_role", "viewer", "clerk"])
    @pytest.mark.parametrize(
        "method, path", [("get", "adjust"), ("put", "adjust"), ("post", "movements"), ("delete", "movements")]
    )
    def test_on_widget_actions(self, request, create_widget, user, method, path):
        client = request.getfixturevalue(user)
        widget = create_widget(stock=1)

        response = getattr(client, method)(f"/api/widgets/{widget['id']}/{path}/", {}, format="json")

        assert_json_error(response, 405, "method_not_allowed")
        assert StockMovement.objects.filter(widget_id=widget["id"]).count() == 1
