"""Production hardening: Django's deployment checks pass with production settings, the
security headers and the HTTPS redirect are in place, and passwords meet the validators."""

import secrets

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import make_user
from tests.processes import manage

# What an Elastic Beanstalk environment sets; every other security setting is on by default.
PRODUCTION_ENV = {
    "DJANGO_ALLOWED_HOSTS": "widgets.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://widgets.example.com",
}


def deploy_check(**env):
    return manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV, **env)


class TestDeployCheck:
    def test_production_settings_pass_check_deploy_without_a_warning(self):
        result = deploy_check()

        assert result.returncode == 0, result.stdout + result.stderr
        assert "System check identified no issues (0 silenced)." in result.stdout

    @pytest.mark.parametrize(
        "env, warning",
        [
            ({"DJANGO_DEBUG": "1"}, "security.W018"),
            ({"DJANGO_SECURE_COOKIES": "0"}, "security.W012"),
        ],
    )
    def test_check_fails_when_a_protection_is_turned_off(self, env, warning):
        result = deploy_check(**env)

        assert result.returncode != 0
        assert warning in result.stdout + result.stderr


@pytest.mark.django_db
class TestHeadersAndRedirect:
    @pytest.fixture
    def production(self, settings):
        settings.SECURE_SSL_REDIRECT = True  # tests/conftest.py turns it off for the rest
        settings.ALLOWED_HOSTS = ["widgets.example.com"]
        return Client(HTTP_HOST="widgets.example.com")

    def test_plain_http_is_redirected_to_https(self, production):
        response = production.get("/api/widgets/?limit=5")

        assert response.status_code == 301
        assert response["Location"] == "https://widgets.example.com/api/widgets/?limit=5"

    @pytest.mark.parametrize("path", ["/healthz", "/readyz"])
    def test_health_checks_over_plain_http_are_not_redirected(self, production, path):
        assert production.get(path).status_code == 200

    def test_https_from_the_load_balancer_gets_the_security_headers(self, production):
        response = production.get("/api/widgets/", HTTP_X_FORWARDED_PROTO="https")

        assert response.status_code == 401
        assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"

    def test_pages_may_not_be_framed(self, production):
        response = production.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")

        assert response["X-Frame-Options"] == "DENY"

    def test_session_and_csrf_cookies_are_secure_and_http_only_session(self, production):
        user = make_user(is_staff=True)
        production.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
        production.post(
            "/admin/login/", {"username": user.username, "password": "pw-Secret-123"}, HTTP_X_FORWARDED_PROTO="https"
        )

        session, csrf = production.cookies["sessionid"], production.cookies["csrftoken"]
        assert session["secure"] and session["httponly"]
        assert csrf["secure"]


@pytest.mark.django_db
class TestPasswordValidators:
    """Wherever a password is set (the admin's user forms), Django's validators apply."""

    @pytest.fixture
    def admin_client(self, client):
        client.force_login(make_user(is_staff=True, is_superuser=True))
        return client

    @pytest.mark.parametrize(
        "password, message",
        [
            ("password", "This password is too common."),
            ("x7!k", "This password is too short."),
            ("83719264051", "This password is entirely numeric."),
            ("warehouse-clerk", "The password is too similar to the username."),
        ],
    )
    def test_admin_refuses_a_weak_password_for_a_new_user(self, admin_client, password, message):
        response = admin_client.post(
            "/admin/auth/user/add/",
            {"username": "warehouse-clerk", "password1": password, "password2": password, "usable_password": "true"},
        )

        assert response.status_code == 200
        assert message in response.content.decode()
        assert not User.objects.filter(username="warehouse-clerk").exists()

    def test_admin_accepts_a_strong_password(self, admin_client):
        password = secrets.token_urlsafe(16)

        response = admin_client.post(
            "/admin/auth/user/add/",
            {"username": "warehouse-clerk", "password1": password, "password2": password, "usable_password": "true"},
        )

        assert response.status_code == 302
        assert User.objects.get(username="warehouse-clerk").check_password(password)

    def test_own_password_change_refuses_a_weak_password(self, client):
        user = make_user(is_staff=True)
        client.force_login(user)

        response = client.post(
            "/admin/password_change/",
            {"old_password": "pw-Secret-123", "new_password1": "password", "new_password2": "password"},
        )

        assert response.status_code == 200
        assert "This password is too common." in response.content.decode()
        user.refresh_from_db()
        assert user.check_password("pw-Secret-123")
