"""Revoking a token, deactivating a user and removing a role take effect on the very next
request on every server process, however long the processes remember verified tokens.

Two gunicorn processes share a PostgreSQL database and Redis, as two instances behind the
load balancer do; each has seen the tokens before the change. Needs DATABASE_URL (PostgreSQL)
and REDIS_URL; skipped, saying so, without them.
"""

import json
import os
import secrets
import subprocess
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests import processes
from tests.processes import http

DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")

pytestmark = pytest.mark.skipif(
    not (DATABASE_URL.startswith(("postgres://", "postgresql://")) and REDIS_URL),
    reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL: two server processes share both",
)

SETUP = """
import json
from django.contrib.auth.models import Group, User
from widgets.models import ApiToken
tokens = {}
for name, role in [("alice", "clerk"), ("bob", "viewer"), ("carol", "viewer")]:
    user = User.objects.create_user(username=name, password="pw-Secret-123")
    user.groups.add(Group.objects.get(name=role))
    token, key = ApiToken.objects.issue(user=user, name="procs")
    tokens[name] = {"id": token.pk, "key": key}
print(json.dumps(tokens))
"""


def psql(admin_url: str, statement: str) -> None:
    subprocess.run(["psql", admin_url, "-qc", statement], check=True, capture_output=True, timeout=60)


@pytest.fixture
def two_instances(tmp_path):
    """Two gunicorn processes on a fresh PostgreSQL database, sharing Redis under a key prefix
    of their own, each remembering verified tokens for 5 minutes. Yields (urls, manage)."""
    parts = urlsplit(DATABASE_URL)
    name = f"{parts.path.lstrip('/') or 'widgets'}_procs_{secrets.token_hex(4)}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    psql(admin_url, f'CREATE DATABASE "{name}"')
    settings = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}")),
        "REDIS_URL": REDIS_URL,
        "DJANGO_CACHE_KEY_PREFIX": f"procs-{secrets.token_hex(4)}",
        "DJANGO_TOKEN_CACHE_SECONDS": "300",
    }

    def manage(*args):
        result = processes.manage(*args, **settings)
        assert result.returncode == 0, result.stderr
        return result.stdout

    try:
        manage("migrate", "--noinput", "-v", "0")
        with processes.servers(2, processes.project_env(**settings), tmp_path) as urls:
            yield urls, manage
    finally:
        psql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def statuses(urls, token):
    return [http("GET", f"{url}/api/widgets/", token=token)[0] for url in urls]


def test_credential_changes_reach_every_server_process(two_instances):
    (first, second), manage = two_instances
    tokens = json.loads(manage("shell", "-c", SETUP).strip().splitlines()[-1])
    alice, bob, carol = (tokens[name]["key"] for name in ("alice", "bob", "carol"))
    # Every process has verified (and remembers) every token.
    for key in (alice, bob, carol):
        assert statuses([first, second, first, second], key) == [200, 200, 200, 200]

    # A token revoked through one process is refused by the other on the next request.
    status, _, _ = http("DELETE", f"{first}/api/auth/tokens/{tokens['alice']['id']}/", token=alice)
    assert status == 204
    status, _, body = http("GET", f"{second}/api/widgets/", token=alice)
    assert status == 401, body
    assert body["detail"] == "Token has been revoked."
    assert statuses([first], alice) == [401]

    # A user deactivated elsewhere (another process: the admin, a shell) is refused by both.
    manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; u = User.objects.get(username='bob'); "
        "u.is_active = False; u.save()",
    )
    assert statuses([second, first], bob) == [401, 401]

    # A role removed elsewhere: the user is still authenticated, but may no longer read.
    manage(
        "shell", "-c", "from django.contrib.auth.models import User; User.objects.get(username='carol').groups.clear()"
    )
    assert statuses([first, second], carol) == [403, 403]
