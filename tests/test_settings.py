"""Start-up configuration: production defaults refuse to run without a secret key."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(*args, **env_changes):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_missing_secret_key_fails_fast_with_a_clear_message():
    result = manage("check")

    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is not set" in result.stderr
    assert "Traceback" in result.stderr  # it fails at import, before any request is served


def test_empty_secret_key_is_refused_too():
    result = manage("check", DJANGO_SECRET_KEY="")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_with_a_secret_key_the_production_defaults_pass_the_system_check():
    result = manage("check", DJANGO_SECRET_KEY="x" * 50)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_debug_must_be_a_boolean():
    result = manage("check", DJANGO_SECRET_KEY="x" * 50, DJANGO_DEBUG="maybe")

    assert result.returncode != 0
    assert "DJANGO_DEBUG must be a boolean" in result.stderr


def test_a_negative_idempotency_purge_rate_is_refused_at_start():
    result = manage("check", DJANGO_SECRET_KEY="x" * 50, DJANGO_IDEMPOTENCY_PURGE_EVERY="-1")

    assert result.returncode != 0
    assert "DJANGO_IDEMPOTENCY_PURGE_EVERY must be 0 (off) or a positive number" in result.stderr
