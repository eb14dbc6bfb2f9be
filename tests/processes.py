"""The project in another process: settings read at start-up, commands, and real servers.

Settings are read once per process, so a test of what the environment does starts a fresh
interpreter. Every such process gets the same environment: this one's minus every setting
of the app (``DJANGO_*``, ``DATABASE_URL``, ``RDS_*``, ``REDIS_URL``), with the local
``.env`` turned off (a developer's file must not change a test), a throwaway secret key,
and the variables the test gives. A variable given as ``None`` is left unset.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP_SETTINGS = ("DJANGO_", "DATABASE_URL", "RDS_", "REDIS_URL")


def project_env(**env) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith(APP_SETTINGS)}
    merged = {
        **base,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV_FILE": "",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        **env,
    }
    return {key: value for key, value in merged.items() if value is not None}


def run_python(*args: str, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """``python <args>`` in the project root, with ``project_env(**env)``."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=project_env(**env), capture_output=True, text=True, timeout=timeout
    )


def manage(*args: str, **env) -> subprocess.CompletedProcess:
    """``python manage.py <args>``, as ``run_python``."""
    return run_python("manage.py", *args, **env)


def free_ports(count: int) -> list[int]:
    """Free TCP ports: from TEST_PORT_RANGE (e.g. 8200-8299) if set, else the OS's choice."""
    if "TEST_PORT_RANGE" in os.environ:
        low, high = map(int, os.environ["TEST_PORT_RANGE"].split("-"))
        candidates = iter(range(low, high + 1))
    else:
        candidates = iter(lambda: 0, None)
    ports = []
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(sock.getsockname()[1])
        if len(ports) == count:
            return ports
    pytest.fail(f"no {count} free ports in TEST_PORT_RANGE={os.environ.get('TEST_PORT_RANGE')}")


def http(method, url, body=None, token=None, forwarded_for=None):
    """One JSON request as an API client behind the load balancer sends it:
    (status, headers, decoded body)."""
    headers = {"Accept": "application/json", "X-Forwarded-Proto": "https"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def gunicorn(port: int) -> list[str]:
    """The production server: gunicorn, one worker with two threads."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "2",
    ]


def procfile_gunicorn(port: int) -> list[str]:
    """gunicorn as the Procfile runs it, with gunicorn.conf.py (its limits, its JSON errors)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "config.wsgi:application",
    ]


def runserver(port: int) -> list[str]:
    """The local server of `make run`."""
    return [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]


@contextmanager
def servers(count: int, env: dict[str, str], log_dir: Path, *, command=gunicorn, timeout: float = 60):
    """``count`` server processes (``command(port)``: ``gunicorn`` or ``runserver``) serving
    the app with ``env`` (from ``project_env``), on free ports; yields their base URLs once
    each answers /healthz, and stops them on exit. Their output goes to ``log_dir``."""
    processes, urls, logs = [], [], []
    try:
        for port in free_ports(count):
            logs.append(log_dir / f"server-{port}.log")
            with open(logs[-1], "w") as log:
                processes.append(
                    subprocess.Popen(command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
                )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + timeout
        for url, server, log in zip(urls, processes, logs, strict=True):
            while True:
                assert server.poll() is None, f"server exited:\n{log.read_text()}"
                try:
                    if http("GET", f"{url}/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
