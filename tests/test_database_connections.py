"""A server keeps its PostgreSQL connection between requests and notices, before the next
request, when PostgreSQL has ended it (a restart, a failover, ``pg_terminate_backend``):
the request is served on a new connection instead of failing.

The check asks the connection's socket rather than sending ``SELECT 1``
(config/postgresql/base.py), so these run the production server, gunicorn, on PostgreSQL.
Needs DATABASE_URL (PostgreSQL); skipped, saying so, without it.
"""

import json
import os
import secrets
import subprocess
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests import processes
from tests.processes import http

DATABASE_URL = os.environ.get("DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    not DATABASE_URL.startswith(("postgres://", "postgresql://")),
    reason="needs DATABASE_URL (PostgreSQL): the connection check is PostgreSQL's",
)

SETUP = """
import json
from django.contrib.auth.models import Group, User
from widgets.models import ApiToken
user = User.objects.create_user(username="viewer", password="pw-Secret-123")
user.groups.add(Group.objects.get(name="viewer"))
print(json.dumps(ApiToken.objects.issue(user=user, name="connections")[1]))
"""


def one_thread_gunicorn(port: int) -> list[str]:
    # gunicorn.conf.py as deployed, with one worker of one thread: one database connection,
    # whichever request comes.
    return [*processes.procfile_gunicorn(port), "--workers", "1", "--threads", "1"]


@pytest.fixture
def server(tmp_path):
    """gunicorn on a fresh database, keeping connections (CONN_MAX_AGE 600). Yields (url,
    token, sql): sql runs a statement on that database from outside the server."""
    parts = urlsplit(DATABASE_URL)
    name = f"{parts.path.lstrip('/') or 'widgets'}_conns_{secrets.token_hex(4)}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    database_url = urlunsplit(parts._replace(path=f"/{name}"))

    def sql(url, statement):
        result = subprocess.run(["psql", url, "-Atqc", statement], check=True, capture_output=True, text=True)
        return result.stdout.split()

    sql(admin_url, f'CREATE DATABASE "{name}"')
    # One secret key for the command that issues the token and the server that checks it.
    settings = {
        "DATABASE_URL": database_url,
        "DJANGO_CONN_MAX_AGE": "600",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    }
    try:
        for command in (["migrate", "--noinput", "-v", "0"], ["shell", "-c", SETUP]):
            result = processes.manage(*command, **settings)
            assert result.returncode == 0, result.stderr
        token = json.loads(result.stdout.strip().splitlines()[-1])
        env = processes.project_env(**settings)
        with processes.servers(1, env, tmp_path, command=one_thread_gunicorn) as (url,):
            yield url, token, lambda statement: sql(database_url, statement)
    finally:
        sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SERVER_CONNECTIONS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' ORDER BY pid"
)


def test_the_server_keeps_its_connection_between_requests(server):
    url, token, sql = server
    assert http("GET", f"{url}/api/widgets/", token=token)[0] == 200
    connections = sql(SERVER_CONNECTIONS)
    assert len(connections) == 1

    for _ in range(5):
        assert http("GET", f"{url}/api/widgets/", token=token)[0] == 200

    assert sql(SERVER_CONNECTIONS) == connections


def test_a_connection_postgresql_ended_is_replaced_before_the_next_request(server):
    url, token, sql = server
    assert http("GET", f"{url}/api/widgets/", token=token)[0] == 200
    (ended,) = sql(SERVER_CONNECTIONS)

    assert sql(f"SELECT pg_terminate_backend({ended}, 5000)") == ["t"]

    status, _, body = http("GET", f"{url}/api/widgets/", token=token)
    assert status == 200, body
    (replacement,) = sql(SERVER_CONNECTIONS)
    assert replacement != ended
    # And the new one is kept in turn.
    time.sleep(0.1)
    assert http("GET", f"{url}/api/widgets/", token=token)[0] == 200
    assert sql(SERVER_CONNECTIONS) == [replacement]
