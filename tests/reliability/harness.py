"""The pieces the end-to-end reliability runs share: a database, the real server, tokens.

Everything here drives the app the way production does: ``manage.py`` commands and
gunicorn serving ``config.wsgi`` with DEBUG off. Nothing imports the app itself, so
each run sees exactly what a deployment would.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# The load balancer terminates TLS and says so; production settings redirect plain HTTP.
FORWARDED_HTTPS = {"X-Forwarded-Proto": "https"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    """Production settings (DEBUG off) with a throwaway secret key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_DEBUG="0",
        DATABASE_URL=database_url,
        DJANGO_LOG_LEVEL="WARNING",
        DJANGO_ENV_FILE="",  # never a developer's local .env (config/env.py)
    )
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return result.stdout.strip()


def recreate_database(admin_url: str, name: str) -> str:
    """Drop and create ``name`` on the server of ``admin_url``; returns its URL."""
    for sql in (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'):
        subprocess.run(["psql", admin_url, "-qc", sql], check=True, capture_output=True)
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, name: str) -> None:
    subprocess.run(
        ["psql", admin_url, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
        check=False,
        capture_output=True,
    )


def prepare(env: dict[str, str], *, widgets: int, roles: dict[str, str]) -> dict[str, str]:
    """Migrate, seed, and create one user per ``{username: role}``; returns their raw token keys."""
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    if widgets:
        manage(env, "seed_widgets", "--count", str(widgets), "--seed", "8", "--days", "0", "-v", "0")
    create_users = (
        "from django.contrib.auth.models import Group, User\n"
        f"for name, role in {roles!r}.items():\n"
        "    user, _ = User.objects.get_or_create(username=name)\n"
        "    user.groups.add(Group.objects.get(name=role))\n"
    )
    manage(env, "shell", "-c", create_users)
    return {name: manage(env, "issue_token", name, "--name", "reliability") for name in roles}


def request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body=None,
    timeout: float = 10,
    headers: dict[str, str] | None = None,
):
    """One HTTP request; returns ``(status, headers, parsed JSON or raw text)``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    for name, value in {**FORWARDED_HTTPS, **(headers or {})}.items():
        req.add_header(name, value)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, resp_headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, resp_headers, raw = exc.code, dict(exc.headers), exc.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, resp_headers, json.loads(text) if text else None
    except ValueError:
        return status, resp_headers, text


def wait_until(predicate, *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(interval)
    return False


class Gunicorn:
    """gunicorn serving the app on 127.0.0.1:``port`` with the production configuration
    (gunicorn.conf.py, as the Procfile runs it) and ``workers`` workers; stop() ends it."""

    def __init__(self, env: dict[str, str], port: int, *, workers: int = 2):
        self.env, self.port, self.url = env, port, f"http://127.0.0.1:{port}"
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="gunicorn-", suffix=".log", delete=False)
        config = ["--config", "gunicorn.conf.py"] if (ROOT / "gunicorn.conf.py").exists() else []
        self.process = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", *config, "config.wsgi:application"],
            cwd=ROOT,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env={
                **env,
                "GUNICORN_HOST": "127.0.0.1",
                "PORT": str(port),
                "GUNICORN_WORKERS": str(workers),
                "GUNICORN_GRACEFUL_TIMEOUT": "5",
            },
        )
        healthy = wait_until(lambda: request("GET", f"{self.url}/healthz", timeout=2)[0] == 200, timeout=30)
        if not healthy:
            self.stop()
            raise RuntimeError(f"gunicorn did not start; log:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def log(self) -> str:
        self.log_file.flush()
        return Path(self.log_file.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def gunicorn(env: dict[str, str], port: int, **options):
    server = Gunicorn(env, port, **options)
    try:
        yield server
    finally:
        server.stop()


class PrivatePostgres:
    """A PostgreSQL instance of our own (initdb into a temp dir) that a test may stop and start.

    With ``standby_of`` (a running PrivatePostgres) it is instead a streaming replica of that
    server: a ``pg_basebackup -R`` copy, read-only, replaying the primary's WAL as it comes.
    """

    def __init__(self, port: int, *, standby_of: PrivatePostgres | None = None):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="reliability-pg-")
        self.data = Path(self.dir) / "data"
        self.socket_dir = Path(self.dir)
        self.admin_url = f"postgres://postgres@127.0.0.1:{port}/postgres"
        if standby_of is None:
            command = [PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
        else:
            # initdb's default pg_hba.conf trusts replication connections from 127.0.0.1.
            command = [
                PG_BIN / "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(standby_of.port),
                "-U",
                "postgres",
                "-D",
                self.data,
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ]
        subprocess.run(command, check=True, capture_output=True, **self._as_postgres())

    def _as_postgres(self) -> dict:
        # initdb/postgres refuse to run as root; drop to the 'postgres' system user then.
        if os.geteuid() != 0:
            return {}
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [PG_BIN / "pg_ctl", "-D", self.data, *args], check=True, capture_output=True, **self._as_postgres()
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("start", "-w", "-t", "30", "-l", str(Path(self.dir) / "postgres.log"), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-w", "-m", mode)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        subprocess.run(["rm", "-rf", self.dir], check=False)


def sql(database_url: str, query: str) -> list[str]:
    out = subprocess.run(["psql", database_url, "-AtXqc", query], check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line]


def stock_total(database_url: str) -> int:
    return int(sql(database_url, "SELECT COALESCE(SUM(stock), 0) FROM widgets_widget")[0])


def verify_books(
    env: dict[str, str], database_url: str, *, initial_total: int, movements_seen: dict[int, int]
) -> tuple[dict, list[str]]:
    """After a run: the ledger invariant for every widget, the stock total, and exactly-once.

    ``movements_seen`` maps the id of every movement a 201 reported to its delta. Returns
    the figures and a list of problems (empty when the books balance).
    """
    problems = []
    try:
        ledger = manage(env, "check_ledger")
    except subprocess.CalledProcessError as exc:
        ledger = exc.stderr.strip() or exc.stdout.strip()
        problems.append(f"check_ledger failed: {ledger}")
    total = stock_total(database_url)
    expected = initial_total + sum(movements_seen.values())
    if total != expected:
        problems.append(f"stock total {total} != initial {initial_total} + deltas of 201s {expected - initial_total}")
    stored = {
        int(pk): int(delta)
        for pk, delta in (
            row.split("|")
            for row in sql(database_url, "SELECT id, delta FROM widgets_stockmovement WHERE reason <> 'initial'")
        )
    }
    if stored != movements_seen:
        unseen = sorted(set(stored) - set(movements_seen))[:10]
        missing = sorted(set(movements_seen) - set(stored))[:10]
        problems.append(f"movements in the database differ from the 201s seen: unseen {unseen}, missing {missing}")
    figures = {
        "check_ledger": ledger,
        "stock_total_before": initial_total,
        "stock_total_after": total,
        "movements_stored": len(stored),
        "movements_seen_in_201s": len(movements_seen),
    }
    return figures, problems


def write_report(name: str, report: dict) -> Path:
    path = ROOT / "test-artifacts" / "reliability" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    return path
