"""Browser tests: Playwright driving Debian's Chromium against pytest-django's live server.

Without /usr/bin/chromium the tests skip with the reason, so `make test` passes on a fresh
machine; CI sets BROWSER_TESTS_REQUIRED=1 (see .ci/run) and then a missing browser FAILS.
Playwright never downloads a browser here: `playwright install` is not used.
Screenshots of every page visited go to test-artifacts/browser/.
"""

import os
from pathlib import Path

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import override_settings

from tests.conftest import make_user

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
PASSWORD = "pw-Secret-123"  # what tests.conftest.make_user gives every user


@pytest.fixture(scope="session")
def _no_https_redirect_at_start():
    override = override_settings(SECURE_SSL_REDIRECT=False)
    override.enable()
    return override


@pytest.fixture(scope="session")
def _request_threads_close_their_connections():
    # The server's request threads would otherwise keep their database connections for
    # CONN_MAX_AGE while the browser holds a keep-alive socket, and PostgreSQL then
    # refuses to drop the test database at the end of the run.
    database = connections.settings[DEFAULT_DB_ALIAS]
    saved = database["CONN_MAX_AGE"]
    database["CONN_MAX_AGE"] = 0
    yield
    database["CONN_MAX_AGE"] = saved


@pytest.fixture(scope="session")
def live_server(django_db_setup, _no_https_redirect_at_start, _request_threads_close_their_connections, live_server):
    """pytest-django's live server, started without the HTTPS redirect: it speaks plain
    HTTP, and SecurityMiddleware reads SECURE_SSL_REDIRECT once, when the server starts.
    It starts after the test database is set up, so it stops before that is dropped."""
    _no_https_redirect_at_start.disable()
    return live_server


@pytest.fixture
def browser_page(live_server, settings, monkeypatch):
    """A fresh Chromium page; ``page.url_for(path)`` is the live server's URL for ``path``."""
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} not found: install it with `apt-get install -y chromium`"
        if os.environ.get("BROWSER_TESTS_REQUIRED") == "1":
            pytest.fail(f"BROWSER_TESTS_REQUIRED=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # between browser steps are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The live server speaks plain HTTP (TLS ends at the load balancer in production).
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        page.url_for = lambda path: live_server.url + path
        try:
            yield page
        finally:
            # Queries the test made while Playwright's loop ran used connections stored for
            # that context; close them here, where they are still reachable.
            connections.close_all()
            browser.close()


def screenshot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def admin_user(transactional_db):
    return make_user(username="staff-admin", is_staff=True, is_superuser=True)


def log_in_to_admin(page, user):
    page.goto(page.url_for("/admin/login/?next=/admin/"))
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
