"""Regenerate the screenshots in docs/ from the running app: `make screenshots`.

Start the app first (`make run`), then run this with the same environment as manage.py (the
Makefile target does). It signs in as the local admin by creating a session for it in the
database (no password needed), opens each page below in Debian's Chromium at 1366 x 768,
and writes the PNG files next to this script.
"""

import argparse
import os
import sys
from importlib import import_module
from pathlib import Path
from urllib.parse import urlsplit

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
# (file in docs/, path, a selector that is there once the page has drawn itself)
SHOTS = [
    ("dashboard.png", "/admin/widgets/widget/dashboard/", ".line-chart svg"),
    ("admin-widgets.png", "/admin/widgets/widget/?low_stock=yes", "#result_list"),
    ("api-root.png", "/api/", ".response-info"),
]


def admin_session(username: str) -> tuple[str, str]:
    """(cookie name, session key) of a new session signed in as ``username``."""
    sys.path.insert(0, str(DOCS.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    from config.env import read_env_file

    read_env_file()  # the same local settings as manage.py (the .env `make run` wrote)

    django.setup()
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model

    try:
        user = get_user_model().objects.get(username=username, is_staff=True, is_active=True)
    except get_user_model().DoesNotExist:
        sys.exit(f"No active staff user {username!r}: start the app with `make run` first.")
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return settings.SESSION_COOKIE_NAME, session.session_key


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", default="admin")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found: apt-get install -y chromium")
    cookie_name, session_key = admin_session(args.username)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        host = urlsplit(args.base_url).hostname
        context.add_cookies([{"name": cookie_name, "value": session_key, "domain": host, "path": "/"}])
        page = context.new_page()
        for filename, path, ready in SHOTS:
            page.goto(args.base_url + path)
            page.locator(ready).first.wait_for(timeout=15_000)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(DOCS / filename))
            print(f"docs/{filename}  <- {path}")
        browser.close()


if __name__ == "__main__":
    main()
