"""List endpoints make a bounded number of queries, whatever the page size."""

import pytest
from django.core.management import call_command

from widgets.models import Widget

pytestmark = pytest.mark.django_db

# authentication (token + user), permissions (user and group perms), count, page
MAX_QUERIES = 6


@pytest.fixture
def inventory(clerk):
    call_command("seed_widgets", count=600, days=0, verbosity=0)
    first = Widget.objects.order_by("id").first().pk
    for _ in range(3):
        clerk.post(f"/api/widgets/{first}/adjust/", {"delta": 5, "reason": "received"}, format="json")
    return first


@pytest.mark.parametrize(
    "url", ["/api/widgets/", "/api/categories/", "/api/movements/", "/api/widgets/{first}/movements/"]
)
def test_list_queries_are_bounded_and_independent_of_page_size(viewer, inventory, url, django_assert_max_num_queries):
    url = url.format(first=inventory)
    viewer.get(url)  # the token's last_used_at is written once a minute: not part of a page
    counts = {}
    for limit in (5, 500):
        with django_assert_max_num_queries(MAX_QUERIES) as captured:
            response = viewer.get(url, {"limit": limit})
        assert response.status_code == 200
        assert len(response.json()["results"]) > 1
        counts[limit] = len(captured)

    assert counts[5] == counts[500]


def test_token_check_is_part_of_the_count(viewer, inventory, django_assert_max_num_queries):
    viewer.get("/api/widgets/")
    with django_assert_max_num_queries(MAX_QUERIES) as captured:
        viewer.get("/api/widgets/", {"limit": 5})

    assert any("widgets_apitoken" in q["sql"] for q in captured.captured_queries)
