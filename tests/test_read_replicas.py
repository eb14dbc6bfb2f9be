"""Read replicas (DATABASE_REPLICA_URLS): which database answers which request.

Replicas are configured at start-up, so each case runs the app in its own process (Django's
test client, production settings) on SQLite files: the primary, and as "replica" a copy of
it taken before one more widget was added to the primary. That copy is a replica frozen in
the past: a read it serves cannot see the newer widget, which tells who answered. The real
thing (a PostgreSQL streaming replica, concurrent clients over HTTP, a replica stopped under
load) is tests/reliability/replicas.py, run by .ci/run.
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys, time
import django
django.setup()
from django.test import Client

steps, tokens = json.loads(sys.argv[1]), json.loads(sys.argv[2])
client = Client(HTTP_X_FORWARDED_PROTO="https")
answers = []
for step in steps:
    if "sleep" in step:
        time.sleep(step["sleep"])
        continue
    headers = {"HTTP_AUTHORIZATION": f"Token {tokens[step['as']]}"} if "as" in step else {}
    body = json.dumps(step["body"]) if "body" in step else ""
    response = client.generic(step["method"], step["path"], body, content_type="application/json", **headers)
    is_json = response.get("Content-Type", "").startswith("application/json")
    answers.append({"status": response.status_code, "body": response.json() if is_json else None})
print(json.dumps(answers))
"""


def environment(primary: Path, replica_urls: str | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_")) and k != "REDIS_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_SECRET_KEY="replica-tests-only",
        DJANGO_ALLOWED_HOSTS="testserver",
        DJANGO_LOG_LEVEL="CRITICAL",
        DATABASE_URL=f"sqlite:///{primary}",
    )
    env.update(extra)
    if replica_urls is not None:
        env["DATABASE_REPLICA_URLS"] = replica_urls
    return env


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    """The primary, its copy from before the newest widget, and the users' tokens."""
    directory = tmp_path_factory.mktemp("replicas")
    primary, replica = directory / "primary.sqlite3", directory / "replica.sqlite3"
    env = environment(primary)
    assert manage(env, "migrate", "--noinput", "-v0").returncode == 0
    prepared = manage(
        env,
        "shell",
        "-c",
        (
            "import json\nfrom django.contrib.auth.models import Group, User\nfrom "
            "django.core.management import call_command\n"
            "from widgets.models import ApiToken\n"
            "call_command('seed_widgets', count=3, seed=1, verbosity=0)\n"
            "tokens = {}\n"
            "for name, role in (('writer', 'manager'), ('reader', 'viewer')):\n"
            "    user = User.objects.create_user(name)\n"
            "    user.groups.add(Group.objects.get(name=role))\n"
            "    tokens[name] = ApiToken.objects.issue(user=user)[1]\n"
            "print(json.dumps(tokens))"
        ),
    )
    assert prepared.returncode == 0, prepared.stderr
    tokens = json.loads(prepared.stdout.strip().splitlines()[-1])
    shutil.copyfile(primary, replica)
    added = manage(
        env,
        "shell",
        "-c",
        (
            "from django.contrib.auth.models import User\nfrom widgets import services\n"
            "w = services.create_widget(user=User.objects.get(username='writer'), name='Newer', "
            "sku='NEWER-1', stock=2)\n"
            "print(w.pk)"
        ),
    )
    assert added.returncode == 0, added.stderr
    empty = directory / "empty.sqlite3"
    sqlite3.connect(empty).close()  # a database that answers but has none of our tables
    return {
        "primary": primary,
        "replica": f"sqlite:///{replica}",
        "empty": f"sqlite:///{empty}",
        "unreachable": f"sqlite:///{directory}/no-such-directory/replica.sqlite3",
        "tokens": tokens,
        "newer": int(added.stdout.strip().splitlines()[-1]),
    }


def probe(databases, replica: str, steps: list[dict], **extra) -> list[dict]:
    env = environment(databases["primary"], databases[replica], **extra)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(steps), json.dumps(databases["tokens"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_database_replica_urls_there_is_one_database_and_no_router(tmp_path):
    dump = (
        "from django.conf import settings; print(list(settings.DATABASES), settings.DATABASE_ROUTERS, "
        "[m for m in settings.MIDDLEWARE if 'replica' in m])"
    )
    result = manage(environment(tmp_path / "db.sqlite3"), "shell", "-c", dump)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['default'] [] []"


def test_with_database_replica_urls_each_replica_is_a_database_behind_the_router(tmp_path):
    dump = "from django.conf import settings; print(list(settings.DATABASES), settings.DATABASE_ROUTERS)"
    urls = f"sqlite:///{tmp_path}/a.sqlite3, sqlite:///{tmp_path}/b.sqlite3"
    result = manage(environment(tmp_path / "db.sqlite3", urls), "shell", "-c", dump)

    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip().splitlines()[-1]
        == "['default', 'replica_0', 'replica_1'] ['config.replicas.ReplicaRouter']"
    )


def test_a_replica_url_that_is_not_a_database_url_stops_start_up_without_showing_it(tmp_path):
    result = manage(environment(tmp_path / "db.sqlite3", "mysqlx://app:hunter2@replica/db"), "check")

    assert result.returncode != 0
    assert "DATABASE_REPLICA_URLS: entry 1 is not a database URL" in result.stderr
    assert "hunter2" not in result.stderr


def test_reads_are_served_by_a_replica_and_readyz_reports_it(databases):
    newer = databases["newer"]
    listed, retrieved, ready = probe(
        databases,
        "replica",
        [
            {"as": "reader", "method": "GET", "path": "/api/widgets/"},
            {"as": "reader", "method": "GET", "path": f"/api/widgets/{newer}/"},
            {"method": "GET", "path": "/readyz"},
        ],
    )

    assert listed["status"] == 200 and listed["body"]["count"] == 3  # the primary has 4
    assert retrieved["status"] == 404
    assert ready == {"status": 200, "body": {"status": "ok", "database": "ok", "replicas": {"replica_0": "ok"}}}


def test_a_writer_reads_its_own_writes_from_the_primary(databases):
    created, writer_reads, reader_reads = probe(
        databases,
        "replica",
        [
            {"as": "writer", "method": "POST", "path": "/api/widgets/", "body": {"name": "Mine", "sku": "MINE-1"}},
            {"as": "writer", "method": "GET", "path": "/api/widgets/?search=MINE-1"},
            {"as": "reader", "method": "GET", "path": "/api/widgets/?search=MINE-1"},
        ],
        DATABASE_REPLICA_STICKY_SECONDS="60",
    )

    assert created["status"] == 201, created
    assert writer_reads["body"]["count"] == 1  # from the primary
    assert reader_reads["body"]["count"] == 0  # the reader has written nothing: the replica, which lags


def test_after_the_sticky_window_a_writer_reads_from_the_replica_again(databases):
    created, writer_reads = probe(
        databases,
        "replica",
        [
            {"as": "writer", "method": "POST", "path": "/api/widgets/", "body": {"name": "Later", "sku": "LATER-1"}},
            {"sleep": 1.5},
            {"as": "writer", "method": "GET", "path": "/api/widgets/?search=LATER-1"},
        ],
        DATABASE_REPLICA_STICKY_SECONDS="1",
    )

    assert created["status"] == 201, created
    assert writer_reads["body"]["count"] == 0  # the replica, which does not have it


def test_a_write_request_reads_what_it_changes_from_the_primary(databases):
    (changed,) = probe(
        databases,
        "replica",
        [
            {
                "as": "writer",
                "method": "PATCH",
                "path": f"/api/widgets/{databases['newer']}/",
                "body": {"name": "Renamed"},
            },
        ],
    )

    assert changed["status"] == 200, changed  # not 404: the widget is not on the replica
    assert changed["body"]["name"] == "Renamed"


def test_management_commands_read_the_primary(databases):
    env = environment(databases["primary"], databases["replica"])

    result = manage(env, "check_ledger")

    assert result.returncode == 0, result.stderr
    widgets = int(re.search(r"for (\d+) widgets", result.stdout).group(1))
    assert widgets >= 4  # the replica has 3


def test_an_unreachable_replica_is_skipped_and_readyz_reports_it_without_failing(databases):
    retrieved, ready = probe(
        databases,
        "unreachable",
        [
            {"as": "reader", "method": "GET", "path": f"/api/widgets/{databases['newer']}/"},
            {"method": "GET", "path": "/readyz"},
        ],
    )

    assert retrieved["status"] == 200  # read from the primary
    assert ready == {
        "status": 200,
        "body": {"status": "degraded", "database": "ok", "replicas": {"replica_0": "unreachable"}},
    }


def test_a_read_that_fails_on_the_replica_is_answered_from_the_primary(databases):
    # The replica connects and answers SELECT 1, then fails the request's query.
    listed, ready = probe(
        databases,
        "empty",
        [
            {"as": "reader", "method": "GET", "path": "/api/widgets/"},
            {"method": "GET", "path": "/readyz"},
        ],
    )

    assert listed["status"] == 200, listed
    assert listed["body"]["count"] >= 4  # the primary's widgets
    assert ready["body"]["replicas"] == {"replica_0": "unreachable"}  # skipped for a while now
    assert ready["status"] == 200


def test_a_postgresql_replica_gets_the_primarys_tls_settings_and_a_short_connect_timeout(tmp_path):
    dump = "from django.conf import settings; print(sorted(settings.DATABASES['replica_0']['OPTIONS'].items()))"
    env = environment(
        tmp_path / "unused.sqlite3",
        "postgres://app:pw@replica.internal:5432/widgets",
        DATABASE_URL="postgres://app:pw@primary.internal:5432/widgets",
        DJANGO_DB_SSLMODE="verify-full",
        DJANGO_DB_SSLROOTCERT="/etc/rds/global-bundle.pem",
    )

    result = manage(env, "shell", "-c", dump)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "[('connect_timeout', 2), ('sslmode', 'verify-full'), ('sslrootcert', '/etc/rds/global-bundle.pem')]"
    )
