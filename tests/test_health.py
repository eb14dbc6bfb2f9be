"""Health probes: /healthz (process) and /readyz (database), JSON, no authentication."""

import json

import pytest

from tests.processes import run_python


def test_healthz_is_ok_without_auth_or_database(anon):
    # No django_db mark: pytest-django makes any database access here an error.
    response = anon.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ok_when_the_database_answers(anon):
    response = anon.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_is_503_json_when_the_database_is_unreachable():
    # A separate process whose DATABASE_URL points at a port nothing listens on.
    probe = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/readyz', HTTP_HOST='localhost');"
        "print(json.dumps({'status': r.status_code, 'type': r['Content-Type'], 'body': r.json()}))"
    )
    result = run_python("-c", probe, timeout=60, DATABASE_URL="postgres://nobody@127.0.0.1:1/nothing")

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 503
    assert outcome["type"].startswith("application/json")
    assert outcome["body"] == {"status": "unavailable", "database": "unreachable"}
