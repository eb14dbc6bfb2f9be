"""API tokens: issued for a username and password, hashed at rest, expiring, revocable."""

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import make_user, token_client
from widgets.models import ApiToken

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"  # make_user's


def issue(client=None, **body):
    return (client or APIClient()).post("/api/auth/token/", body, format="json")


def with_key(raw_key, keyword="Token"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {raw_key}")
    return client


def assert_unauthorized(response, detail):
    assert response.status_code == 401, response.content
    assert response.json()["detail"] == detail
    assert response["WWW-Authenticate"] == 'Token realm="api"'


class TestIssue:
    """POST /api/auth/token/ exchanges a username and password for a new token."""

    def test_returns_key_once_with_its_description(self):
        user = make_user("viewer")

        response = issue(username=user.username, password=PASSWORD, name="scanner")

        assert response.status_code == 201, response.content
        body = response.json()
        assert set(body) == {"token", "id", "name", "prefix", "read_only", "expires_at"}
        assert body["name"] == "scanner"
        assert body["read_only"] is False
        assert body["token"].startswith(body["prefix"])
        assert body["prefix"].startswith("wgi_")
        assert ApiToken.objects.get(pk=body["id"]).user == user

    def test_issued_key_authenticates_as_token_and_as_bearer(self):
        user = make_user("viewer")
        key = issue(username=user.username, password=PASSWORD).json()["token"]

        assert with_key(key, "Token").get("/api/widgets/").status_code == 200
        assert with_key(key, "Bearer").get("/api/widgets/").status_code == 200

    def test_database_holds_no_raw_key(self):
        user = make_user()
        body = issue(username=user.username, password=PASSWORD).json()

        stored = ApiToken.objects.filter(pk=body["id"]).values().get()
        secret_part = body["token"][len(body["prefix"]) :]
        assert all(secret_part not in str(value) for value in stored.values())
        assert stored["digest"] != body["token"]

    def test_expires_after_the_default_lifetime(self):
        user = make_user()

        body = issue(username=user.username, password=PASSWORD).json()

        expected = timezone.now() + timedelta(days=settings.TOKEN_DEFAULT_EXPIRY_DAYS)
        expires_at = ApiToken.objects.get(pk=body["id"]).expires_at
        assert abs(expires_at - expected) < timedelta(minutes=1)

    def test_expires_in_days_sets_the_lifetime(self):
        user = make_user()

        body = issue(username=user.username, password=PASSWORD, expires_in_days=7).json()

        expires_at = ApiToken.objects.get(pk=body["id"]).expires_at
        assert abs(expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)

    def test_read_only_token_reads_but_may_not_write(self):
        user = make_user("manager")
        body = issue(username=user.username, password=PASSWORD, read_only=True).json()
        client = with_key(body["token"])

        assert body["read_only"] is True
        assert client.get("/api/widgets/").status_code == 200
        response = client.post("/api/widgets/", {"name": "Nope"}, format="json")
        assert response.status_code == 403
        assert response.json()["detail"] == "This token is read-only."

    def test_several_tokens_per_user(self):
        user = make_user()

        first = issue(username=user.username, password=PASSWORD, name="laptop").json()
        second = issue(username=user.username, password=PASSWORD, name="scanner").json()

        assert first["token"] != second["token"]
        assert ApiToken.objects.filter(user=user).count() == 2

    def test_stale_authorization_header_does_not_matter(self):
        user = make_user()

        response = issue(with_key("wgi_not-a-real-key"), username=user.username, password=PASSWORD)

        assert response.status_code == 201

    @pytest.mark.parametrize("case", ["wrong password", "unknown user", "inactive user"])
    def test_bad_credentials_are_400_without_saying_which_half_was_wrong(self, case):
        user = make_user(is_active=case != "inactive user")
        username = "nobody-by-this-name" if case == "unknown user" else user.username
        password = "wrong-password" if case == "wrong password" else PASSWORD

        response = issue(username=username, password=password)

        assert response.status_code == 400
        assert response.json() == {
            "detail": "Unable to log in with the provided username and password.",
            "code": "invalid_credentials",
        }
        assert not ApiToken.objects.exists()

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"password": PASSWORD}, "username"),
            ({"username": "someone"}, "password"),
            ({"username": "someone", "password": PASSWORD, "expires_in_days": 0}, "expires_in_days"),
            ({"username": "someone", "password": PASSWORD, "expires_in_days": 366}, "expires_in_days"),
            ({"username": "someone", "password": PASSWORD, "expires_in_days": "soon"}, "expires_in_days"),
            ({"username": "someone", "password": PASSWORD, "read_only": "maybe"}, "read_only"),
            ({"username": "someone", "password": PASSWORD, "name": "x" * 101}, "name"),
        ],
    )
    def test_invalid_input_is_400_naming_the_field(self, body, field):
        make_user(username="someone")

        response = issue(**body)

        assert response.status_code == 400
        assert field in response.json()
        assert not ApiToken.objects.exists()

    def test_get_is_405(self):
        response = APIClient().get("/api/auth/token/")

        assert response.status_code == 405


class TestAuthentication:
    """What a presented key is worth: 401 with a clear detail unless it is valid."""

    def test_no_credentials_is_401_with_www_authenticate(self, anon):
        assert_unauthorized(anon.get("/api/widgets/"), "Authentication credentials were not provided.")

    def test_unknown_key_is_401(self):
        assert_unauthorized(with_key("wgi_thisKeyWasNeverIssued").get("/api/widgets/"), "Invalid token.")

    def test_key_with_a_known_prefix_but_wrong_secret_is_401(self, viewer):
        forged = viewer.raw_key[: ApiToken.PREFIX_LENGTH] + "x" * 40

        assert_unauthorized(with_key(forged).get("/api/widgets/"), "Invalid token.")

    def test_expired_token_is_401(self, viewer):
        ApiToken.objects.filter(user=viewer.user).update(expires_at=timezone.now() - timedelta(seconds=1))

        assert_unauthorized(viewer.get("/api/widgets/"), "Token has expired.")

    def test_revoked_token_is_401(self, viewer):
        ApiToken.objects.filter(user=viewer.user).revoke()

        assert_unauthorized(viewer.get("/api/widgets/"), "Token has been revoked.")

    def test_inactive_users_token_is_401(self, viewer):
        viewer.user.is_active = False
        viewer.user.save()

        assert_unauthorized(viewer.get("/api/widgets/"), "User inactive or deleted.")

    def test_malformed_header_is_401(self):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token two parts")

        response = client.get("/api/widgets/")

        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Token realm="api"'

    def test_token_that_never_expires_keeps_working(self):
        client = token_client(make_user("viewer"), expires_in_days=0)

        assert ApiToken.objects.get(user=client.user).expires_at is None
        assert client.get("/api/widgets/").status_code == 200


class TestLastUsed:
    """last_used_at is bookkeeping: written at most once a minute, not on every request."""

    def test_first_use_records_the_time(self, viewer):
        before = timezone.now()

        viewer.get("/api/widgets/")

        assert ApiToken.objects.get(user=viewer.user).last_used_at >= before

    def test_second_request_within_a_minute_writes_nothing(self, viewer):
        viewer.get("/api/widgets/")
        first = ApiToken.objects.get(user=viewer.user).last_used_at

        with CaptureQueriesContext(connection) as queries:
            assert viewer.get("/api/widgets/").status_code == 200

        assert not [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "apitoken" in q["sql"]]
        assert ApiToken.objects.get(user=viewer.user).last_used_at == first

    def test_written_again_once_a_minute_has_passed(self, viewer):
        long_ago = timezone.now() - timedelta(minutes=2)
        ApiToken.objects.filter(user=viewer.user).update(last_used_at=long_ago)

        viewer.get("/api/widgets/")

        assert ApiToken.objects.get(user=viewer.user).last_used_at > long_ago + timedelta(minutes=1)


class TestList:
    """GET /api/auth/tokens/: the caller's own tokens, without secrets."""

    def test_lists_only_own_tokens_newest_first_without_secrets(self, viewer):
        ApiToken.objects.issue(user=viewer.user, name="second")
        ApiToken.objects.issue(user=make_user(), name="someone else's")

        response = viewer.get("/api/auth/tokens/")

        assert response.status_code == 200
        body = response.json()
        assert body["count"] == 2
        assert [t["name"] for t in body["results"]] == ["second", ""]
        assert set(body["results"][0]) == {
            "id",
            "name",
            "prefix",
            "read_only",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
        }
        assert viewer.raw_key not in response.content.decode()

    def test_is_paginated(self, viewer):
        for _ in range(3):
            ApiToken.objects.issue(user=viewer.user)

        body = viewer.get("/api/auth/tokens/?limit=2").json()

        assert body["count"] == 4
        assert len(body["results"]) == 2
        assert body["next"] is not None

    def test_revoked_tokens_stay_listed_with_revoked_at(self, viewer):
        token, _ = ApiToken.objects.issue(user=viewer.user, name="old")
        ApiToken.objects.filter(pk=token.pk).revoke()

        listed = {t["name"]: t for t in viewer.get("/api/auth/tokens/").json()["results"]}

        assert listed["old"]["revoked_at"] is not None
        assert listed[""]["revoked_at"] is None

    def test_any_authenticated_user_may_list_even_without_role(self, no_role):
        assert no_role.get("/api/auth/tokens/").status_code == 200

    def test_browsable_api_session_may_list(self):
        client = APIClient()
        client.force_login(make_user())

        assert client.get("/api/auth/tokens/").status_code == 200

    def test_anonymous_is_401(self, anon):
        assert anon.get("/api/auth/tokens/").status_code == 401

    def test_anothers_token_detail_is_404(self, viewer):
        token, _ = ApiToken.objects.issue(user=make_user())

        assert viewer.get(f"/api/auth/tokens/{token.pk}/").status_code == 404


class TestRevoke:
    """DELETE /api/auth/tokens/{id}/ revokes one of the caller's own tokens."""

    def test_revokes_own_token_which_then_is_401(self, viewer):
        other, other_key = ApiToken.objects.issue(user=viewer.user, name="laptop")

        response = viewer.delete(f"/api/auth/tokens/{other.pk}/")

        assert response.status_code == 204
        other.refresh_from_db()
        assert other.revoked_at is not None
        assert_unauthorized(with_key(other_key).get("/api/widgets/"), "Token has been revoked.")
        assert viewer.get("/api/widgets/").status_code == 200  # the caller's own token still works

    def test_may_revoke_the_token_in_use(self, viewer):
        token = ApiToken.objects.get(user=viewer.user)

        assert viewer.delete(f"/api/auth/tokens/{token.pk}/").status_code == 204
        assert viewer.get("/api/widgets/").status_code == 401

    def test_revoking_twice_keeps_the_first_time(self, viewer):
        token, _ = ApiToken.objects.issue(user=viewer.user)
        viewer.delete(f"/api/auth/tokens/{token.pk}/")
        first = ApiToken.objects.get(pk=token.pk).revoked_at

        assert viewer.delete(f"/api/auth/tokens/{token.pk}/").status_code == 204
        assert ApiToken.objects.get(pk=token.pk).revoked_at == first

    def test_another_users_token_is_404_and_stays_valid(self, viewer):
        stranger = token_client(make_user("viewer"))
        token = ApiToken.objects.get(user=stranger.user)

        assert viewer.delete(f"/api/auth/tokens/{token.pk}/").status_code == 404
        assert stranger.get("/api/widgets/").status_code == 200

    def test_read_only_token_may_not_revoke(self):
        client = token_client(make_user(), read_only=True)
        token = ApiToken.objects.get(user=client.user)

        response = client.delete(f"/api/auth/tokens/{token.pk}/")

        assert response.status_code == 403
        assert ApiToken.objects.get(pk=token.pk).revoked_at is None


class TestIssueTokenCommand:
    def test_prints_only_the_raw_key(self):
        user = make_user("viewer")
        out = StringIO()

        call_command("issue_token", user.username, "--name", "cli", stdout=out)

        lines = out.getvalue().splitlines()
        assert len(lines) == 1
        token = ApiToken.objects.get(user=user)
        assert lines[0].startswith(token.prefix)
        assert token.name == "cli"
        assert with_key(lines[0]).get("/api/widgets/").status_code == 200

    def test_read_only_and_expiry_options(self):
        user = make_user()

        call_command("issue_token", user.username, "--read-only", "--expires-days", "3", stdout=StringIO())

        token = ApiToken.objects.get(user=user)
        assert token.read_only is True
        assert abs(token.expires_at - (timezone.now() + timedelta(days=3))) < timedelta(minutes=1)


class TestAdmin:
    """The admin lists and revokes tokens; no page shows a key or its digest."""

    @pytest.fixture
    def admin_client(self, client):
        client.force_login(make_user(is_staff=True, is_superuser=True))
        return client

    def test_list_shows_tokens_but_no_digest(self, admin_client, viewer):
        token = ApiToken.objects.get(user=viewer.user)

        listing = admin_client.get("/admin/widgets/apitoken/")
        detail = admin_client.get(f"/admin/widgets/apitoken/{token.pk}/change/")

        assert listing.status_code == 200
        assert token.prefix in listing.content.decode()
        for page in (listing, detail):
            assert token.digest not in page.content.decode()
            assert viewer.raw_key not in page.content.decode()

    def test_revoke_action_revokes_selected_tokens(self, admin_client, viewer):
        token = ApiToken.objects.get(user=viewer.user)

        response = admin_client.post("/admin/widgets/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})

        assert response.status_code == 302
        assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
        assert viewer.get("/api/widgets/").status_code == 401

    def test_tokens_cannot_be_added_in_the_admin(self, admin_client):
        assert admin_client.get("/admin/widgets/apitoken/add/").status_code == 403


def test_drf_authtoken_is_not_installed():
    assert "rest_framework.authtoken" not in settings.INSTALLED_APPS
