"""Throttling: a rate for anonymous clients, one per user, and a strict limit on every login
form (POST /api/auth/token/, /admin/login/, /api-auth/login/) per username and per IP.

A window opens with a client's first request and lasts the rate's period, so a test that
counts up to a limit never straddles two windows.
"""

import os
import secrets

import pytest
from rest_framework.test import APIClient

from tests.conftest import make_user, token_client
from tests.processes import http, manage, project_env, servers
from widgets.models import ApiToken

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"  # make_user's


@pytest.fixture
def rates(settings):
    """Set throttle rates for this test: ``rates(login="3/hour")``."""

    def set_rates(**scoped):
        current = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**current, **scoped},
        }

    return set_rates


def token_attempt(password=PASSWORD, username=None, ip="10.0.0.1", user=None):
    body = {"username": username or user.username, "password": password}
    return APIClient(REMOTE_ADDR=ip).post("/api/auth/token/", body, format="json")


def assert_throttled(response):
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 3600


class TestTokenEndpoint:
    """POST /api/auth/token/: every attempt counts, right password or wrong."""

    def test_sixth_attempt_in_a_minute_is_429_with_retry_after_by_default(self):
        user = make_user()
        for password in ["wrong", PASSWORD, "wrong", PASSWORD, "wrong"]:
            assert token_attempt(password, user=user).status_code in (201, 400)

        response = token_attempt(user=user)

        assert response.status_code == 429
        assert response.json() == {
            "detail": response.json()["detail"],
            "code": "throttled",
        }
        assert "Request was throttled" in response.json()["detail"]
        assert 1 <= int(response["Retry-After"]) <= 60

    def test_window_opens_with_the_first_attempt(self, rates):
        rates(login="1/hour")
        user = make_user()
        token_attempt("wrong", user=user)

        response = token_attempt(user=user)

        assert response.status_code == 429
        # A whole period from the first attempt, not the rest of a clock-aligned hour.
        assert 3590 <= int(response["Retry-After"]) <= 3600

    def test_throttled_attempt_with_the_right_password_issues_no_token(self, rates):
        rates(login="2/hour")
        user = make_user()
        token_attempt("wrong", user=user)
        token_attempt("wrong", user=user)

        assert_throttled(token_attempt(user=user))
        assert not ApiToken.objects.filter(user=user).exists()

    def test_limit_per_username_holds_across_ips(self, rates):
        rates(login="3/hour")
        user = make_user()
        for n in range(3):
            token_attempt("wrong", user=user, ip=f"10.0.1.{n}")

        assert_throttled(token_attempt(user=user, ip="10.0.1.99"))

    def test_username_variants_in_case_share_one_count(self, rates):
        rates(login="2/hour")
        user = make_user(username="Alice")
        token_attempt("wrong", username="alice", ip="10.0.2.1")
        token_attempt("wrong", username="ALICE", ip="10.0.2.2")

        assert_throttled(token_attempt(user=user, ip="10.0.2.3"))

    def test_limit_per_ip_holds_across_usernames(self, rates):
        rates(login="3/hour")
        for n in range(3):
            token_attempt("wrong", username=f"guess{n}", ip="10.0.3.1")
        user = make_user()

        assert_throttled(token_attempt(user=user, ip="10.0.3.1"))

    def test_other_users_from_other_ips_are_not_affected(self, rates):
        rates(login="2/hour")
        victim = make_user()
        for _ in range(3):
            token_attempt("wrong", user=victim, ip="10.0.4.1")

        assert token_attempt(user=make_user(), ip="10.0.4.2").status_code == 201

    def test_requests_other_than_post_do_not_count(self, rates):
        rates(login="2/hour")
        for _ in range(5):
            assert APIClient().get("/api/auth/token/").status_code == 405

        assert token_attempt(user=make_user(), ip="127.0.0.1").status_code == 201

    def test_client_ip_is_remote_addr_unless_proxies_are_configured(self, rates, settings):
        rates(login="2/hour")
        user = make_user()

        def attempt(forwarded_for):
            body = {"username": user.username, "password": "wrong"}
            return APIClient(REMOTE_ADDR="10.0.5.1", HTTP_X_FORWARDED_FOR=forwarded_for).post(
                "/api/auth/token/", body, format="json"
            )

        attempt("1.1.1.1")
        attempt("2.2.2.2")
        # A client-chosen X-Forwarded-For does not give it a fresh count ...
        assert_throttled(
            APIClient(REMOTE_ADDR="10.0.5.1", HTTP_X_FORWARDED_FOR="3.3.3.3").post(
                "/api/auth/token/", {"username": "someone-else", "password": "x"}, format="json"
            )
        )
        # ... but behind one trusted proxy the address it appends is the client's.
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
        response = APIClient(REMOTE_ADDR="10.0.5.1", HTTP_X_FORWARDED_FOR="9.9.9.9, 4.4.4.4").post(
            "/api/auth/token/", {"username": "someone-else", "password": "x"}, format="json"
        )
        assert response.status_code == 400


@pytest.mark.parametrize("login_url", ["/admin/login/", "/api-auth/login/"])
class TestLoginForms:
    """The admin and browsable-API login forms share the login limit; a throttled attempt
    never reaches the form, so even the right password does not log in."""

    def test_throttled_attempt_is_429_and_does_not_log_in(self, rates, client, login_url):
        rates(login="3/hour")
        user = make_user(is_staff=True, is_superuser=True)
        for _ in range(3):
            response = client.post(login_url, {"username": user.username, "password": "wrong"})
            assert response.status_code == 200  # the form again, with an error

        response = client.post(login_url, {"username": user.username, "password": PASSWORD})

        assert response.status_code == 429
        assert 1 <= int(response["Retry-After"]) <= 3600
        assert "Too many login attempts" in response.content.decode()
        assert "_auth_user_id" not in client.session

    def test_right_password_below_the_limit_logs_in(self, rates, client, login_url):
        rates(login="3/hour")
        user = make_user(is_staff=True, is_superuser=True)

        response = client.post(login_url, {"username": user.username, "password": PASSWORD})

        assert response.status_code == 302
        assert client.session["_auth_user_id"] == str(user.pk)

    def test_showing_the_form_does_not_count(self, rates, client, login_url):
        rates(login="1/hour")
        for _ in range(3):
            assert client.get(login_url).status_code == 200

        user = make_user(is_staff=True, is_superuser=True)
        response = client.post(login_url, {"username": user.username, "password": PASSWORD})
        assert response.status_code == 302

    def test_attempts_on_any_login_form_count_together(self, rates, client, login_url):
        rates(login="2/hour")
        user = make_user()
        client.post("/admin/login/", {"username": user.username, "password": "wrong"})
        token_attempt("wrong", user=user, ip="127.0.0.1")

        response = client.post(login_url, {"username": user.username, "password": PASSWORD})

        assert response.status_code == 429


class TestRates:
    def test_user_rate_limits_each_user_separately(self, rates, viewer):
        rates(user="3/hour")
        other = token_client(make_user("viewer"))
        for _ in range(3):
            assert viewer.get("/api/widgets/").status_code == 200

        response = viewer.get("/api/widgets/")

        assert_throttled(response)
        assert other.get("/api/widgets/").status_code == 200

    def test_with_tokens_remembered_every_request_still_counts_once(self, rates, viewer, settings):
        """A remembered token's request is counted in the same Redis call that reads the
        credentials generation (widgets.api.authentication); the limit is the same."""
        settings.API_TOKEN_CACHE_SECONDS = 60
        rates(user="3/hour")
        for _ in range(3):
            assert viewer.get("/api/widgets/").status_code == 200

        assert_throttled(viewer.get("/api/widgets/"))

    def test_anonymous_rate_limits_what_anonymous_clients_may_read(self, rates, anon):
        rates(anon="2/hour")
        for _ in range(2):
            assert anon.get("/api/schema/?format=json").status_code == 200

        response = anon.get("/api/schema/?format=json")

        assert response.status_code == 429
        assert 1 <= int(response["Retry-After"]) <= 3600

    def test_health_checks_are_never_throttled(self, rates, anon):
        rates(anon="1/hour")
        for _ in range(3):
            assert anon.get("/healthz").status_code == 200


class TestRatesFromEnvironment:
    def test_documented_defaults(self):
        result = manage("diffsettings")

        assert result.returncode == 0, result.stderr
        assert "'DEFAULT_THROTTLE_RATES': {'anon': '60/min', 'user': '1200/min', 'login': '5/min'}" in result.stdout

    def test_environment_sets_each_rate(self):
        result = manage(
            "diffsettings",
            DJANGO_THROTTLE_ANON="10/hour",
            DJANGO_THROTTLE_USER="100/min",
            DJANGO_THROTTLE_LOGIN="3/min",
        )

        assert result.returncode == 0, result.stderr
        assert "'DEFAULT_THROTTLE_RATES': {'anon': '10/hour', 'user': '100/min', 'login': '3/min'}" in result.stdout

    @pytest.mark.parametrize(
        "env, message",
        [
            ({"DJANGO_THROTTLE_LOGIN": "lots"}, "DJANGO_THROTTLE_LOGIN must be a rate such as 5/min"),
            ({"DJANGO_NUM_PROXIES": "-1"}, "DJANGO_NUM_PROXIES must be a whole number"),
        ],
    )
    def test_invalid_value_stops_start_up_naming_the_variable(self, env, message):
        result = manage("check", **env)

        assert result.returncode != 0
        assert message in result.stderr


# --- Two server processes sharing one Redis ------------------------------------------------------


@pytest.fixture
def two_servers(tmp_path):
    """Two gunicorn processes on one SQLite file, sharing the Redis at REDIS_URL under a key
    prefix of their own. Yields their base URLs."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("needs Redis: set REDIS_URL (the two servers share their throttle counts there)")
    import redis

    prefix = f"two-servers-{secrets.token_hex(4)}"
    env = dict(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL=redis_url,
        DJANGO_CACHE_KEY_PREFIX=prefix,
        DJANGO_THROTTLE_LOGIN="3/hour",
        DJANGO_THROTTLE_USER="4/hour",
        # One trusted proxy, so that the test can play clients at different addresses.
        DJANGO_NUM_PROXIES="1",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    for command in (
        ["migrate", "--noinput", "-v", "0"],
        ["createsuperuser", "--noinput", "--username", "alice", "--email", "alice@example.com"],
    ):
        result = manage(*command, **env)
        assert result.returncode == 0, result.stderr
    try:
        with servers(2, project_env(**env), tmp_path) as urls:
            yield urls
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


def test_limits_hold_across_two_server_processes(two_servers):
    first, second = two_servers

    # The login limit per username (3/hour), from three addresses, alternating servers:
    # wrong and right passwords count alike.
    attempts = [
        http("POST", f"{first}/api/auth/token/", {"username": "alice", "password": "wrong"}, forwarded_for="10.1.0.1"),
        http(
            "POST", f"{second}/api/auth/token/", {"username": "alice", "password": PASSWORD}, forwarded_for="10.1.0.2"
        ),
        http("POST", f"{first}/api/auth/token/", {"username": "alice", "password": "wrong"}, forwarded_for="10.1.0.3"),
    ]
    assert [status for status, _, _ in attempts] == [400, 201, 400]
    status, headers, body = http(
        "POST", f"{second}/api/auth/token/", {"username": "alice", "password": PASSWORD}, forwarded_for="10.1.0.4"
    )
    assert (status, body["code"]) == (429, "throttled")
    assert 1 <= int(headers["Retry-After"]) <= 3600

    # The login limit per IP (3/hour): other usernames from one address.
    for n, server in enumerate([first, second, first]):
        status, _, _ = http(
            "POST", f"{server}/api/auth/token/", {"username": f"guess{n}", "password": "x"}, forwarded_for="10.2.0.1"
        )
        assert status == 400
    status, _, _ = http(
        "POST", f"{second}/api/auth/token/", {"username": "guess9", "password": "x"}, forwarded_for="10.2.0.1"
    )
    assert status == 429

    # The per-user limit (4/hour) with the token issued above, alternating servers.
    token = attempts[1][2]["token"]
    statuses = [http("GET", f"{server}/api/widgets/", token=token)[0] for server in [first, second, first, second]]
    assert statuses == [200, 200, 200, 200]
    status, headers, body = http("GET", f"{first}/api/widgets/", token=token)
    assert (status, body["code"]) == (429, "throttled")
    assert "Retry-After" in headers


class TestCacheUnavailable:
    """Redis down (or failing over) must not take the API down with it."""

    @pytest.fixture
    def redis_down(self, settings):
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
        }

    def test_requests_are_served_uncounted_and_a_warning_logged(self, redis_down, viewer, caplog):
        with caplog.at_level("WARNING", logger="widgets.api.throttling"):
            response = viewer.get("/api/widgets/")

        assert response.status_code == 200
        assert "Throttle counts unavailable" in caplog.text

    def test_logins_still_work(self, redis_down):
        assert token_attempt(user=make_user()).status_code == 201
