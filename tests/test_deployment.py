"""Production settings for Elastic Beanstalk: the database from RDS_* variables, TLS to the
database, the load balancer's health check, and the JSON request log.

Settings are read once per process, so the settings tests start a fresh interpreter with
the environment under test; the rest go through HTTP with the test client.
"""

import ast
import copy
import io
import json
import logging.config

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.conftest import make_user, postgres_only, token_client
from tests.processes import ROOT, manage, run_python

RDS = {
    "RDS_HOSTNAME": "widgets.abc123.eu-west-1.rds.amazonaws.com",
    "RDS_PORT": "5433",
    "RDS_DB_NAME": "ebdb",
    "RDS_USERNAME": "widgets",
    "RDS_PASSWORD": "p@ss/word:with#specials",
}


def database_settings(**env):
    result = run_python(
        "-c", "import json; from django.conf import settings; print(json.dumps(settings.DATABASES['default']))", **env
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def settings_error(**env):
    result = run_python("-c", "from django.conf import settings; settings.DATABASES", **env)
    assert result.returncode != 0, result.stdout
    return result.stderr.strip().splitlines()[-1]


class TestDatabaseFromEnvironment:
    def test_rds_variables_configure_postgresql_with_persistent_health_checked_connections(self):
        db = database_settings(**RDS)

        assert db["ENGINE"] == "config.postgresql"
        assert (db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == (
            RDS["RDS_HOSTNAME"],
            "5433",
            "ebdb",
            "widgets",
            "p@ss/word:with#specials",
        )
        assert db["CONN_MAX_AGE"] == 600
        assert db["CONN_HEALTH_CHECKS"] is True

    def test_rds_port_defaults_to_5432(self):
        env = {**RDS}
        del env["RDS_PORT"]

        assert database_settings(**env)["PORT"] == "5432"

    def test_database_url_wins_over_rds_variables(self):
        db = database_settings(**RDS, DATABASE_URL="postgres://app:pw@db.internal:5432/widgets")

        assert (db["HOST"], db["NAME"], db["USER"]) == ("db.internal", "widgets", "app")
        assert db["ENGINE"] == "config.postgresql"  # Django's, with the socket health check

    def test_without_either_the_default_is_sqlite(self):
        assert database_settings()["ENGINE"] == "django.db.backends.sqlite3"

    def test_rds_hostname_without_credentials_stops_start_up_naming_what_is_missing(self):
        env = {**RDS}
        del env["RDS_PASSWORD"], env["RDS_USERNAME"]

        message = settings_error(**env)

        assert "RDS_USERNAME" in message and "RDS_PASSWORD" in message

    def test_non_numeric_rds_port_stops_start_up(self):
        assert "RDS_PORT" in settings_error(**{**RDS, "RDS_PORT": "five"})


class TestDatabaseTls:
    def test_sslmode_and_root_certificate_reach_the_connection_options(self):
        db = database_settings(
            **RDS, DJANGO_DB_SSLMODE="verify-full", DJANGO_DB_SSLROOTCERT="/etc/rds/global-bundle.pem"
        )

        assert (db["OPTIONS"]["sslmode"], db["OPTIONS"]["sslrootcert"]) == ("verify-full", "/etc/rds/global-bundle.pem")

    def test_sslmode_applies_to_database_url_too(self):
        db = database_settings(DATABASE_URL="postgres://app:pw@db.internal:5432/widgets", DJANGO_DB_SSLMODE="require")

        assert db["OPTIONS"]["sslmode"] == "require"

    def test_without_sslmode_no_tls_option_is_forced(self):
        assert "sslmode" not in database_settings(**RDS).get("OPTIONS", {})

    def test_unknown_sslmode_stops_start_up(self):
        message = settings_error(**RDS, DJANGO_DB_SSLMODE="yes")

        assert "DJANGO_DB_SSLMODE" in message and "verify-full" in message

    def test_sslmode_with_sqlite_stops_start_up(self):
        assert "PostgreSQL only" in settings_error(DJANGO_DB_SSLMODE="require")


@pytest.fixture
def rds_env_for_test_server(django_db_setup):
    """RDS_* variables for the test database pytest-django made on the server of DATABASE_URL.

    Not the database named in DATABASE_URL itself: on a fresh server only the test database
    exists (pytest-django creates it from the server's maintenance database)."""
    db = connection.settings_dict  # the test database since django_db_setup
    return {
        "RDS_HOSTNAME": db["HOST"] or "localhost",
        "RDS_PORT": str(db["PORT"] or 5432),
        "RDS_DB_NAME": db["NAME"],
        "RDS_USERNAME": db["USER"] or "",
        "RDS_PASSWORD": db["PASSWORD"] or "",
    }


CONNECT = "from django.db import connection; connection.ensure_connection(); print(connection.settings_dict['NAME'])"


@postgres_only
@pytest.mark.django_db  # so that pytest-django creates the test database
class TestRdsVariablesAgainstARealServer:
    def test_rds_variables_connect_to_postgresql(self, rds_env_for_test_server):
        env = rds_env_for_test_server

        result = manage("shell", "-c", CONNECT, **env)

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == env["RDS_DB_NAME"]

    def test_verify_full_refuses_a_server_it_cannot_verify(self, rds_env_for_test_server):
        result = manage(
            "shell",
            "-c",
            CONNECT,
            **rds_env_for_test_server,
            DJANGO_DB_SSLMODE="verify-full",
            DJANGO_DB_SSLROOTCERT="/nonexistent/rds-ca.pem",
        )

        assert result.returncode != 0
        assert "SSL" in result.stderr or "certificate" in result.stderr, result.stderr


class TestHealthCheckFromTheLoadBalancer:
    def test_healthz_answers_the_instances_private_ip_as_host(self, client, settings):
        settings.SECURE_SSL_REDIRECT = True  # as in production: the check arrives over plain HTTP

        response = client.get("/healthz", HTTP_HOST="10.0.3.17")

        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    @pytest.mark.django_db
    @pytest.mark.parametrize("path", ["/readyz", "/api/", "/admin/login/", "/healthz/extra"])
    def test_every_other_path_still_refuses_a_host_that_is_not_allowed(self, client, path):
        assert client.get(path, HTTP_HOST="10.0.3.17").status_code == 400

    @pytest.mark.django_db
    def test_allowed_hosts_is_not_opened_to_everything(self, client):
        assert "*" not in django_settings.ALLOWED_HOSTS
        assert client.get("/api/", HTTP_HOST="evil.example").status_code == 400


@pytest.fixture
def log_output():
    """The project's LOGGING configuration, writing to a buffer instead of stdout."""
    buffer = io.StringIO()
    config = copy.deepcopy(django_settings.LOGGING)
    config["handlers"]["stdout"]["stream"] = buffer
    logging.config.dictConfig(config)
    yield buffer
    logging.config.dictConfig(django_settings.LOGGING)


def log_lines(buffer):
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def access_lines(buffer):
    return [line for line in log_lines(buffer) if line["logger"] == "access"]


@pytest.mark.django_db
class TestRequestLog:
    def test_one_json_line_per_request_with_method_path_status_duration_user_and_request_id(self, viewer, log_output):
        response = viewer.get("/api/widgets/?limit=5")

        [line] = access_lines(log_output)
        assert line["method"] == "GET"
        assert line["path"] == "/api/widgets/"
        assert line["status"] == 200
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["user_id"] == viewer.user.pk
        assert line["request_id"] == response["X-Request-ID"]
        assert line["level"] == "INFO" and line["time"].endswith("+00:00")

    def test_anonymous_request_logs_no_user(self, anon, log_output):
        anon.get("/api/widgets/")

        [line] = access_lines(log_output)
        assert (line["status"], line["user_id"]) == (401, None)

    def test_session_user_is_logged(self, client, log_output):
        user = make_user("viewer")
        client.force_login(user)

        client.get("/api/widgets/")

        assert access_lines(log_output)[0]["user_id"] == user.pk

    def test_health_checks_are_logged_too(self, client, log_output):
        client.get("/healthz", HTTP_HOST="10.0.3.17")

        [line] = access_lines(log_output)
        assert (line["path"], line["status"]) == ("/healthz", 200)

    def test_server_error_is_logged_with_its_traceback_and_request_id(
        self, clerk, create_widget, log_output, monkeypatch
    ):
        widget = create_widget(stock=5)

        def broken(**kwargs):
            raise RuntimeError("ledger unavailable")

        monkeypatch.setattr("widgets.services.adjust_stock", broken)
        clerk.raise_request_exception = False

        response = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"}, format="json")

        assert response.status_code == 500
        [error] = [line for line in log_lines(log_output) if line["level"] == "ERROR"]
        assert error["logger"] == "django.request"
        assert "Traceback (most recent call last)" in error["traceback"]
        assert "RuntimeError: ledger unavailable" in error["traceback"]
        assert error["request_id"] == response["X-Request-ID"]
        assert access_lines(log_output)[-1]["status"] == 500

    def test_never_logs_a_token_a_password_a_cookie_or_the_query_string(self, client, viewer, log_output):
        password = "pw-Secret-123"  # make_user's password
        user = make_user("viewer")
        tokened = token_client(user)
        tokened.cookies["sessionid"] = "session-cookie-value-0123456789"
        tokened.cookies["csrftoken"] = "csrf-cookie-value-0123456789"

        tokened.get("/api/widgets/?password=query-secret-value&token=query-token-value")
        tokened.get("/api/widgets/", HTTP_AUTHORIZATION="Token not-a-real-key-but-secret")  # a 401
        client.post("/api-auth/login/", {"username": user.username, "password": password})
        client.post("/api-auth/login/", {"username": user.username, "password": "wrong-password-value"})
        client.get("/healthz", HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_COOKIE="sessionid=health-cookie-value")

        output = log_output.getvalue()
        assert len(access_lines(log_output)) == 5
        for secret in (
            tokened.raw_key,
            tokened.raw_key[:16],
            "not-a-real-key-but-secret",
            password,
            "wrong-password-value",
            "session-cookie-value",
            "csrf-cookie-value",
            "health-cookie-value",
            "query-secret-value",
            "query-token-value",
            "password=",
            "token=",
        ):
            assert secret not in output


@pytest.mark.django_db
class TestRequestId:
    def test_a_request_id_is_generated_and_echoed(self, anon):
        first, second = anon.get("/healthz"), anon.get("/healthz")

        assert len(first["X-Request-ID"]) == 32
        assert first["X-Request-ID"] != second["X-Request-ID"]

    def test_the_callers_request_id_is_echoed(self, viewer):
        response = viewer.get("/api/widgets/", HTTP_X_REQUEST_ID="edge-7f3a.42")

        assert response["X-Request-ID"] == "edge-7f3a.42"

    @pytest.mark.parametrize("bad", ["has space", "x" * 129, "line\\nbreak", '"quoted"'])
    def test_a_malformed_request_id_is_replaced_not_logged(self, anon, log_output, bad):
        response = anon.get("/healthz", HTTP_X_REQUEST_ID=bad)

        assert response["X-Request-ID"] != bad
        assert access_lines(log_output)[0]["request_id"] == response["X-Request-ID"]


class TestRequestIdInTheSchema:
    def test_every_operation_documents_the_request_id_header_both_ways(self, anon):
        schema = anon.get("/api/schema/?format=json").json()

        operations = [op for item in schema["paths"].values() for op in item.values() if "responses" in op]
        assert operations
        for operation in operations:
            assert "X-Request-ID" in [p["name"] for p in operation["parameters"] if p["in"] == "header"]
            for response in operation["responses"].values():
                assert "X-Request-ID" in response.get("headers", {}), operation["operationId"]


class TestSecretKeyRotation:
    def test_previous_keys_come_from_the_environment(self):
        result = run_python(
            "-c",
            "from django.conf import settings; print(settings.SECRET_KEY_FALLBACKS)",
            DJANGO_SECRET_KEY_FALLBACKS="old-key-1, old-key-2",
        )

        assert result.stdout.strip() == "['old-key-1', 'old-key-2']"

    @pytest.mark.django_db
    @pytest.mark.parametrize("fallbacks, status", [(True, 200), (False, 401)])
    def test_a_session_made_under_the_old_key_survives_rotation_only_with_the_fallback(
        self, client, settings, fallbacks, status
    ):
        client.force_login(make_user("viewer"))
        old_key = settings.SECRET_KEY

        settings.SECRET_KEY = "the-new-secret-key-" + "x" * 40
        settings.SECRET_KEY_FALLBACKS = [old_key] if fallbacks else []

        assert client.get("/api/widgets/").status_code == status


class TestDeploymentRehearsal:
    def test_every_check_across_instances_runs_unconditionally(self):
        """`make deploy-check` (deploy/check.py) once skipped checks for features that had not
        landed yet; they all have, so a missing one must fail the rehearsal, not skip."""
        tree = ast.parse((ROOT / "deploy" / "check.py").read_text())
        scale_out = next(
            node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "scale_out"
        )
        called = [
            node.value.func.attr
            for node in scale_out.body
            if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
        ]

        assert [name for name in called if name.endswith("_across_instances")] == [
            "check_session_across_instances",
            "check_login_throttle_across_instances",
            "check_idempotency_across_instances",
            "check_cache_across_instances",
        ]
        assert not [node for node in ast.walk(scale_out) if isinstance(node, ast.If)]
