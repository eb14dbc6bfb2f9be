"""No request leaves the origin: every page a person opens loads only from our own server.

Each page is opened in Chromium with every network request recorded (documents, scripts,
stylesheets, images, fonts, XHR, the favicon); any host other than the live server's fails
the test, as does any request that fails or any answer of 400 or more.
"""

from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import ARTIFACTS, log_in_to_admin
from widgets import services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

# (path, a selector that is there once the page has drawn itself)
PAGES = [
    ("/admin/", "#content-main"),
    ("/admin/widgets/widget/dashboard/", ".line-chart svg"),
    ("/admin/widgets/widget/", "#result_list"),
    ("/admin/widgets/stockmovement/", "#result_list"),
    ("/api/", ".response-info"),
    ("/api/widgets/", ".response-info"),
    ("/api/docs/", ".opblock"),
    ("/api/redoc/", "[role=menuitem], .menu-content"),
]


def test_every_page_loads_only_from_our_own_origin(browser_page, admin_user):
    widget = services.create_widget(sku="ORIGIN-1", name="Origin bolt", stock=9, reorder_level=10)
    services.adjust_stock(widget_id=widget.pk, delta=-2, reason="sold", user=admin_user)
    page = browser_page
    origin = urlsplit(page.url_for("/"))[:2]
    requests, failures, errors = [], [], []
    page.on("request", lambda request: requests.append(request.url))
    # net::ERR_ABORTED is a request the browser cancelled itself, e.g. an image still loading
    # when the next page is opened: not an answer of ours (those are checked below).
    page.on(
        "requestfailed",
        lambda request: (
            failures.append((request.url, request.failure)) if request.failure != "net::ERR_ABORTED" else None
        ),
    )
    page.on(
        "response", lambda response: errors.append((response.url, response.status)) if response.status >= 400 else None
    )
    log_in_to_admin(page, admin_user)

    visited = {}
    for path, ready in PAGES:
        requests.clear()
        page.goto(page.url_for(path))
        page.locator(ready).first.wait_for()
        page.wait_for_load_state("networkidle")
        visited[path] = list(requests)
        # The visible part only: ReDoc's full page is too tall to capture quickly.
        page.screenshot(path=str(ARTIFACTS / f"origin-{path.strip('/').replace('/', '-')}.png"))

    offsite = {
        path: [url for url in urls if urlsplit(url)[:2] != origin and urlsplit(url).scheme not in ("data", "blob")]
        for path, urls in visited.items()
    }
    assert offsite == {path: [] for path, _ in PAGES}
    assert all(visited.values()), visited  # the recorder did record each page's requests
    assert failures == []
    assert errors == []
