"""Start-up configuration: production defaults refuse to run without a secret key, a bad value
stops start-up with one line naming the variable, and locally `make run`'s .env makes every
manage.py command work with no variable set."""

import re
import stat
import subprocess

import pytest

from tests.processes import ROOT, http, manage, project_env, run_python, runserver, servers


def one_line_error(result) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


class TestSecretKey:
    def test_missing_secret_key_stops_start_up_with_one_clear_line(self):
        line = one_line_error(manage("check", DJANGO_SECRET_KEY=None))

        assert line.startswith("Configuration error: DJANGO_SECRET_KEY is not set.")
        assert "make run" in line

    def test_empty_secret_key_is_refused_too(self):
        assert "DJANGO_SECRET_KEY is not set" in one_line_error(manage("check", DJANGO_SECRET_KEY=""))

    def test_a_secret_key_starting_with_a_dollar_is_taken_as_it_is(self):
        result = run_python(
            "-c", "from django.conf import settings; print(settings.SECRET_KEY)", DJANGO_SECRET_KEY="$ecret" + "x" * 50
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "$ecret" + "x" * 50

    def test_with_a_secret_key_the_production_defaults_pass_the_system_check(self):
        result = manage("check")

        assert result.returncode == 0, result.stderr
        assert "no issues" in result.stdout


class TestBadValues:
    @pytest.mark.parametrize(
        "variable, value, expected",
        [
            ("DJANGO_DEBUG", "maybe", "a boolean"),
            ("DJANGO_REQUIRE_IF_MATCH", "perhaps", "a boolean"),
            ("DJANGO_SECURE_COOKIES", "sometimes", "a boolean"),
            ("DJANGO_TOKEN_CACHE_SECONDS", "abc", "a whole number"),
            ("DJANGO_TOKEN_EXPIRY_DAYS", "90d", "a whole number"),
            ("DJANGO_CONN_MAX_AGE", "forever", "a whole number"),
            ("DJANGO_EXACT_COUNT_LIMIT", "1e4", "a whole number"),
            ("DJANGO_MAX_REQUEST_BYTES", "1MB", "a whole number"),
            ("DJANGO_SECURE_HSTS_SECONDS", "a year", "a whole number"),
            ("DJANGO_IDEMPOTENCY_PURGE_EVERY", "-1", "0 (off) or a positive number"),
            ("DJANGO_NUM_PROXIES", "-1", "a whole number (0 = none)"),
            ("DJANGO_THROTTLE_LOGIN", "lots", "a rate such as 5/min"),
            ("DJANGO_LOG_FORMAT", "xml", "one of json, text"),
            ("DJANGO_LOG_LEVEL", "loud", "one of DEBUG, INFO"),
        ],
    )
    def test_a_bad_value_stops_start_up_naming_the_variable_and_the_value(self, variable, value, expected):
        line = one_line_error(manage("check", **{variable: value}))

        assert f"{variable} must be {expected}" in line
        assert repr(value) in line

    def test_a_bad_database_connect_timeout_is_named_too(self):
        line = one_line_error(
            manage("check", DATABASE_URL="postgres://app@db.internal/widgets", DJANGO_DB_CONNECT_TIMEOUT="soon")
        )

        assert "DJANGO_DB_CONNECT_TIMEOUT must be a whole number, not 'soon'" in line

    @pytest.mark.parametrize("url", ["nonsense", "postgres://app@db.internal:port/widgets"])
    def test_a_bad_database_url_is_named(self, url):
        assert "DATABASE_URL must be a database URL" in one_line_error(manage("check", DATABASE_URL=url))

    def test_a_bad_gunicorn_setting_is_named(self):
        result = run_python("-m", "gunicorn", "--check-config", "config.wsgi:application", GUNICORN_WORKERS="many")

        assert result.returncode != 0
        assert "GUNICORN_WORKERS must be a whole number, not 'many'" in result.stderr


# --- The local .env -------------------------------------------------------------------------------


@pytest.fixture
def local_env_file(tmp_path):
    """The .env that `make run` writes, made by the Makefile's own rule in an empty folder."""
    result = subprocess.run(
        ["make", "-s", "-C", str(tmp_path), "-f", str(ROOT / "Makefile"), ".env"],
        capture_output=True,
        text=True,
        timeout=60,
        env=project_env(),
    )
    assert result.returncode == 0, result.stderr
    return tmp_path / ".env"


class TestLocalEnvFile:
    def test_make_writes_debug_on_and_a_local_secret_readable_only_by_its_owner(self, local_env_file):
        text = local_env_file.read_text()

        assert re.search(r"^DJANGO_DEBUG=1$", text, re.M)
        assert re.search(r"^DJANGO_SECRET_KEY=[A-Za-z0-9_-]{50,}$", text, re.M)
        assert stat.S_IMODE(local_env_file.stat().st_mode) == 0o600

    def test_every_manage_command_works_with_no_variable_set(self, local_env_file, tmp_path):
        env = {"DJANGO_ENV_FILE": str(local_env_file), "DJANGO_SECRET_KEY": None}

        result = manage("diffsettings", **env)

        assert result.returncode == 0, result.stderr
        assert "DEBUG = True" in result.stdout

    def test_the_environment_wins_over_the_file(self, local_env_file):
        result = manage("diffsettings", DJANGO_ENV_FILE=str(local_env_file), DJANGO_DEBUG="0")

        assert result.returncode == 0, result.stderr
        assert "DEBUG = True" not in result.stdout

    def test_the_web_server_and_the_test_suite_never_read_it(self, local_env_file):
        # Both import the settings without manage.py: gunicorn through config.wsgi, pytest directly.
        result = run_python("-c", "import config.wsgi", DJANGO_ENV_FILE=str(local_env_file), DJANGO_SECRET_KEY=None)

        assert result.returncode != 0
        assert "DJANGO_SECRET_KEY is not set" in result.stderr

    def test_issue_token_prints_a_key_the_local_server_accepts(self, local_env_file, tmp_path):
        env = {
            "DJANGO_ENV_FILE": str(local_env_file),
            "DJANGO_SECRET_KEY": None,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        }
        assert manage("migrate", "--noinput", "-v", "0", **env).returncode == 0
        created = manage("ensure_local_admin", **env)
        assert created.returncode == 0, created.stderr

        issued = manage("issue_token", "admin", **env)

        assert issued.returncode == 0, issued.stderr
        key = issued.stdout.strip()
        with servers(1, project_env(**env), tmp_path, command=runserver) as (url,):
            status, _, body = http("GET", f"{url}/api/widgets/?limit=1", token=key)
        assert status == 200, body
        assert body["count"] == 0
