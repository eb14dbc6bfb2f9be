"""What keeps the service fast at a million widgets, proved through HTTP and the admin:
a fixed number of SQL queries per request whatever the page size, bounded counts,
keyset pagination, and a token cache that never outlives a revocation.

Speed itself is measured in bench/, never timed here.
"""

import os
import re
import zoneinfo

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import IS_POSTGRES, postgres_only
from widgets import models
from widgets.models import StockMovement, Widget

pytestmark = pytest.mark.django_db

needs_redis = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="needs REDIS_URL: without a shared cache no token is remembered across requests",
)

# Token lookup, the user's and the groups' permissions, then the page: with the token
# cache off (as in tests), plus the count's estimate and the count on PostgreSQL.
LIST_QUERIES = 6 if IS_POSTGRES else 5


@pytest.fixture
def widgets(db):
    """120 seeded widgets (about two thirds with an initial movement)."""
    call_command("seed_widgets", count=120, days=0, verbosity=0)
    return list(Widget.objects.order_by("id").values_list("id", flat=True))


def warm(client, url):
    # The first request of a token records last_used_at; count the steady state.
    assert client.get(url).status_code == 200


class TestQueriesPerRequest:
    @pytest.mark.parametrize("limit", [1, 50, 120])
    def test_widget_list_costs_the_same_queries_whatever_the_page_size(
        self, viewer, widgets, limit, django_assert_max_num_queries
    ):
        warm(viewer, "/api/widgets/")
        with django_assert_max_num_queries(LIST_QUERIES):
            response = viewer.get(f"/api/widgets/?limit={limit}")

        assert response.status_code == 200
        assert len(response.json()["results"]) == limit

    def test_filtered_list_costs_the_same_queries(self, viewer, widgets, django_assert_max_num_queries):
        warm(viewer, "/api/widgets/")
        with django_assert_max_num_queries(LIST_QUERIES):
            response = viewer.get("/api/widgets/?search=brass&low_stock=true&limit=100")

        assert response.status_code == 200
        assert all("Brass" in w["name"] and w["low_stock"] for w in response.json()["results"])

    @pytest.mark.parametrize("limit", [1, 50])
    def test_movement_list_has_no_per_row_queries(self, viewer, clerk, widgets, limit, django_assert_max_num_queries):
        for widget_id in widgets[:5]:  # movements by a user: created_by is rendered per row
            assert (
                clerk.post(f"/api/widgets/{widget_id}/adjust/", {"delta": 2, "reason": "received"}).status_code == 201
            )
        warm(viewer, "/api/movements/")
        with django_assert_max_num_queries(LIST_QUERIES):
            response = viewer.get(f"/api/movements/?limit={limit}")

        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == limit
        assert results[0]["created_by"] == clerk.user.username

    def test_retrieve_costs_a_fixed_number_of_queries(self, viewer, widgets, django_assert_max_num_queries):
        warm(viewer, "/api/widgets/")
        # The first retrieve on a connection also PREPAREs its statement (widgets/prepared.py).
        assert viewer.get(f"/api/widgets/{widgets[6]}/").status_code == 200
        with django_assert_max_num_queries(4):
            response = viewer.get(f"/api/widgets/{widgets[7]}/")

        assert response.status_code == 200

    def test_adjust_costs_a_fixed_number_of_queries(self, clerk, widgets, django_assert_max_num_queries):
        widget, other = Widget.objects.filter(stock__gt=1)[:2]
        warm(clerk, "/api/widgets/")
        # The first adjustment on a connection also PREPAREs its statement (widgets/prepared.py).
        assert clerk.post(f"/api/widgets/{other.pk}/adjust/", {"delta": -1, "reason": "sold"}).status_code == 201
        # auth (3) + active webhook subscriptions (the outbox: none here, so nothing more is
        # written) + on PostgreSQL one statement (UPDATE ... RETURNING feeding the movement's
        # INSERT, in autocommit outside a test); elsewhere BEGIN/SAVEPOINT, lock, units
        # reserved, update, insert, COMMIT/RELEASE
        with django_assert_max_num_queries(5 if IS_POSTGRES else 10):
            response = clerk.post(f"/api/widgets/{widget.pk}/adjust/", {"delta": -1, "reason": "sold"})

        assert response.status_code == 201, response.content
        assert response.json()["stock_after"] == widget.stock - 1

    def test_a_reservation_and_its_commit_cost_a_fixed_number_of_queries(
        self, settings, clerk, widgets, django_assert_max_num_queries
    ):
        # Without Redis the webhook subscriptions are read from the database: counted, once.
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        first, second, third = Widget.objects.filter(stock__gt=1)[:3]

        def reserve(*widgets):
            items = [{"widget": widget.pk, "quantity": 1} for widget in widgets]
            return clerk.post("/api/reservations/", {"reference": "order", "items": items}, format="json")

        warm(clerk, "/api/widgets/")
        # The first of each on a connection also PREPAREs its statement (widgets/prepared.py).
        assert clerk.post(f"/api/reservations/{reserve(third, first).json()['id']}/commit/").status_code == 201
        # auth (3) + the webhook subscriptions + on PostgreSQL SAVEPOINT, one statement (the
        # widgets' held, the reservation, its items), the change log, RELEASE; elsewhere the
        # locked path: SAVEPOINT, lock, units reserved, reservation, items, held, change log, RELEASE
        with django_assert_max_num_queries(8 if IS_POSTGRES else 12):
            response = reserve(first, second)
        assert response.status_code == 201, response.content
        # the same for a commit: one statement (the reservation, stock and held, the movements)
        # in place of lock, items, lock, units reserved, reservation, widgets, movements
        with django_assert_max_num_queries(8 if IS_POSTGRES else 14):
            response = clerk.post(f"/api/reservations/{response.json()['id']}/commit/")

        assert response.status_code == 201, response.content
        assert [m["stock_after"] for m in response.json()["movements"]] == [first.stock - 2, second.stock - 1]

    @needs_redis
    def test_with_the_token_cache_a_list_costs_no_authentication_queries(
        self, settings, viewer, widgets, django_assert_max_num_queries
    ):
        settings.API_TOKEN_CACHE_SECONDS = 60
        warm(viewer, "/api/widgets/")
        # Only the count (its estimate on PostgreSQL) and the page remain.
        with django_assert_max_num_queries(3 if IS_POSTGRES else 2):
            response = viewer.get("/api/widgets/?limit=100")

        assert response.status_code == 200
        assert len(response.json()["results"]) == 100


class TestTokenCache:
    """The token cache is on (60 s) and every change still counts from the next request.
    Across processes: tests/test_revocation_across_processes.py."""

    @pytest.fixture(autouse=True)
    def cache_on(self, settings):
        settings.API_TOKEN_CACHE_SECONDS = 60

    def test_token_revoked_in_the_admin_is_refused_on_the_next_request(self, client, superuser, viewer, widgets):
        assert viewer.get("/api/widgets/").status_code == 200
        client.force_login(superuser.user)
        token_id = viewer.user.api_tokens.get().pk
        response = client.post("/admin/widgets/apitoken/", {"action": "revoke", "_selected_action": [token_id]})
        assert response.status_code == 302

        response = viewer.get("/api/widgets/")
        assert response.status_code == 401
        assert response.json()["detail"] == "Token has been revoked."

    def test_token_revoked_through_the_api_is_refused_on_the_next_request(self, viewer, widgets):
        assert viewer.get("/api/widgets/").status_code == 200
        token_id = viewer.user.api_tokens.get().pk

        assert viewer.delete(f"/api/auth/tokens/{token_id}/").status_code == 204
        assert viewer.get("/api/widgets/").status_code == 401

    def test_a_deactivated_user_is_refused_on_the_next_request(self, client, superuser, viewer, widgets):
        assert viewer.get("/api/widgets/").status_code == 200
        user = viewer.user
        user.is_active = False
        user.save()

        response = viewer.get("/api/widgets/")
        assert response.status_code == 401
        assert response.json()["detail"] == "User inactive or deleted."

    def test_a_role_removed_takes_effect_on_the_next_request(self, viewer, widgets):
        assert viewer.get("/api/widgets/").status_code == 200
        viewer.user.groups.clear()

        assert viewer.get("/api/widgets/").status_code == 403

    def test_a_permission_taken_from_the_role_takes_effect_on_the_next_request(self, viewer, widgets):
        assert viewer.get("/api/widgets/").status_code == 200
        Group.objects.get(name="viewer").permissions.remove(Permission.objects.get(codename="view_widget"))

        assert viewer.get("/api/widgets/").status_code == 403

    def test_without_a_shared_cache_no_token_is_remembered_across_requests(self, settings, viewer, widgets):
        """Processes that share only the database cannot tell each other about a change, so
        each request looks the token up: even a change that no signal reports is seen."""
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        assert viewer.get("/api/widgets/").status_code == 200
        type(viewer.user).objects.filter(pk=viewer.user.pk).update(is_active=False)

        assert viewer.get("/api/widgets/").status_code == 401

    def test_cache_off_refuses_a_revoked_token_at_once(self, settings, client, superuser, viewer, widgets):
        settings.API_TOKEN_CACHE_SECONDS = 0
        assert viewer.get("/api/widgets/").status_code == 200
        client.force_login(superuser.user)
        token_id = viewer.user.api_tokens.get().pk
        client.post("/admin/widgets/apitoken/", {"action": "revoke", "_selected_action": [token_id]})

        assert viewer.get("/api/widgets/").status_code == 401


class TestKeysetPagination:
    def test_following_next_walks_every_widget_once_in_id_order(self, viewer, widgets):
        seen, url, pages = [], "/api/widgets/?start=0&limit=50", 0
        while url:
            body = viewer.get(url).json()
            assert "count" not in body and body["previous"] is None
            seen += [w["id"] for w in body["results"]]
            url, pages = body["next"], pages + 1

        assert seen == widgets
        assert pages == 3

    def test_start_returns_ids_from_start_on(self, viewer, widgets):
        body = viewer.get(f"/api/widgets/?start={widgets[100]}&limit=5").json()

        assert [w["id"] for w in body["results"]] == widgets[100:105]
        assert f"start={widgets[105]}" in body["next"]

    def test_start_combines_with_filters(self, viewer, widgets):
        body = viewer.get("/api/widgets/?start=0&limit=1000&low_stock=true").json()

        assert [w["id"] for w in body["results"]] == list(
            Widget.objects.low_stock().order_by("id").values_list("id", flat=True)
        )

    def test_deep_page_costs_the_same_queries_as_the_first(self, viewer, widgets, django_assert_max_num_queries):
        warm(viewer, "/api/widgets/")
        for start in (0, widgets[-3]):
            # Auth (3 with the cache off) and the page: no count at all.
            with django_assert_max_num_queries(4):
                assert viewer.get(f"/api/widgets/?start={start}&limit=50").status_code == 200

    @pytest.mark.parametrize(
        "query, field",
        [
            ("start=abc", "start"),
            ("start=-1", "start"),
            ("start=1&offset=50", "offset"),
            ("start=1&ordering=name", "ordering"),
        ],
    )
    def test_bad_keyset_parameters_are_400_naming_the_parameter(self, viewer, widgets, query, field):
        response = viewer.get(f"/api/widgets/?{query}")

        assert response.status_code == 400
        assert field in response.json()


@pytest.fixture
def fresh_table_statistics():
    """The table sizes a process remembers for a minute (widgets.models), forgotten before
    and after: the test reads the statistics it made."""
    models._table_sizes.clear()
    yield
    models._table_sizes.clear()


class TestBoundedCount:
    def test_count_is_exact_up_to_the_limit(self, settings, viewer, widgets):
        settings.API_EXACT_COUNT_LIMIT = 1000
        body = viewer.get("/api/widgets/?limit=10").json()

        assert body["count"] == 120
        assert "count_is_estimate" not in body

    @postgres_only
    def test_count_above_the_limit_is_postgresql_estimate_and_says_so(self, settings, viewer, widgets):
        settings.API_EXACT_COUNT_LIMIT = 20
        body = viewer.get("/api/widgets/?limit=10").json()

        assert body["count_is_estimate"] is True
        assert body["count"] > 20
        assert len(body["results"]) == 10
        assert "offset=10" in body["next"]

    @postgres_only
    def test_a_whole_table_above_the_limit_is_counted_from_its_statistics_without_the_planner(
        self, settings, viewer, widgets, fresh_table_statistics
    ):
        settings.API_EXACT_COUNT_LIMIT = 20
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Widget._meta.db_table}")  # the statistics now say 120 rows
        warm(viewer, "/api/widgets/?limit=10")  # reads them (once a minute per process)

        with CaptureQueriesContext(connection) as whole:
            body = viewer.get("/api/widgets/?limit=10").json()
        with CaptureQueriesContext(connection) as filtered:
            low = viewer.get("/api/widgets/?limit=10&low_stock=false").json()

        assert (body["count"], body["count_is_estimate"], len(body["results"])) == (120, True, 10)
        assert not [q for q in whole if q["sql"].startswith("EXPLAIN")]
        # A filter's rows are the planner's to estimate.
        assert len([q for q in filtered if q["sql"].startswith("EXPLAIN")]) == 1
        assert low["count_is_estimate"] is True

    @postgres_only
    def test_small_filtered_result_is_counted_exactly_even_with_a_large_table(self, settings, viewer, widgets):
        settings.API_EXACT_COUNT_LIMIT = 20
        sku = Widget.objects.get(pk=widgets[3]).sku
        body = viewer.get(f"/api/widgets/?search={sku}").json()

        assert body["count"] == 1
        assert "count_is_estimate" not in body

    @pytest.mark.skipif(IS_POSTGRES, reason="SQLite behaviour; PostgreSQL estimates (tested above)")
    def test_sqlite_always_counts_exactly(self, settings, viewer, widgets):
        settings.API_EXACT_COUNT_LIMIT = 20
        body = viewer.get("/api/widgets/?limit=10").json()

        assert body["count"] == 120
        assert "count_is_estimate" not in body


class TestSeeding:
    def test_seeding_again_adds_the_next_widgets_of_the_series_with_their_ledger(self):
        call_command("seed_widgets", count=30, days=0, verbosity=0)
        call_command("seed_widgets", count=20, days=0, verbosity=0)

        skus = list(Widget.objects.order_by("id").values_list("sku", flat=True))
        assert skus == [f"S1-{n:07d}" for n in range(50)]
        stocked = Widget.objects.filter(stock__gt=0)
        assert StockMovement.objects.filter(reason="initial").count() == stocked.count() > 0


class TestAdminAtScale:
    """Pages cost a bounded number of queries and never list every widget in a <select>."""

    @pytest.fixture
    def staff(self, client, superuser, widgets):
        client.force_login(superuser.user)
        return client

    @pytest.mark.parametrize(
        "url",
        [
            "/admin/widgets/widget/",
            "/admin/widgets/widget/?q=brass",
            "/admin/widgets/widget/?low_stock=yes&category__id__exact=1",
            "/admin/widgets/stockmovement/",
            "/admin/widgets/stockmovement/?reason__exact=initial&q=S1",
        ],
    )
    def test_changelists_cost_a_bounded_number_of_queries(self, staff, url, django_assert_max_num_queries):
        staff.get(url)
        with django_assert_max_num_queries(12):
            response = staff.get(url)

        assert response.status_code == 200

    def test_widget_change_page_is_bounded_and_lists_no_widgets(self, staff, widgets, django_assert_max_num_queries):
        with django_assert_max_num_queries(14):
            response = staff.get(f"/admin/widgets/widget/{widgets[0]}/change/")

        assert response.status_code == 200
        assert len(re.findall(r"<option", response.content.decode())) < 20  # categories, not widgets

    def test_movement_page_shows_the_widget_without_a_select_of_widgets(
        self, staff, widgets, django_assert_max_num_queries
    ):
        movement = StockMovement.objects.first()
        with django_assert_max_num_queries(10):
            response = staff.get(f"/admin/widgets/stockmovement/{movement.pk}/change/")

        assert response.status_code == 200
        assert len(re.findall(r"<option", response.content.decode())) < 20

    def test_browsable_api_list_is_bounded(self, staff, widgets, django_assert_max_num_queries):
        staff.get("/api/widgets/", HTTP_ACCEPT="text/html")
        with django_assert_max_num_queries(14):
            response = staff.get("/api/widgets/?limit=100", HTTP_ACCEPT="text/html")

        assert response.status_code == 200
        assert len(re.findall(r"<option", response.content.decode())) < 60


class TestListRepresentation:
    def test_list_rows_render_every_field_as_the_detail_does(self, viewer, create_widget, create_category):
        category = create_category()
        created = [
            create_widget(name="With category", category=category["id"], price="12.5", reorder_level=3, stock=7),
            create_widget(name="Without category", is_active=False),
        ]

        rows = viewer.get("/api/widgets/?ordering=id").json()["results"]

        assert rows == [viewer.get(f"/api/widgets/{w['id']}/").json() for w in created]
        assert rows[0]["category"] == category["id"] and rows[1]["category"] is None
        assert rows[0]["price"] == "12.50" and rows[0]["low_stock"] is False and rows[1]["is_active"] is False
        assert rows[0]["created_at"].endswith("Z")
        assert rows[0]["url"] == f"http://testserver/api/widgets/{created[0]['id']}/"

    def test_time_stamps_follow_the_active_time_zone(self, settings, viewer, create_widget):
        created = create_widget(name="Zoned")
        stored = Widget.objects.get(pk=created["id"]).created_at
        settings.TIME_ZONE = "Asia/Tokyo"

        row = viewer.get("/api/widgets/?ordering=id").json()["results"][0]
        detail = viewer.get(f"/api/widgets/{created['id']}/").json()

        expected = stored.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo")).isoformat()
        assert row["created_at"] == detail["created_at"] == expected
        assert expected.endswith("+09:00")

    def test_each_request_gets_urls_for_its_own_host(self, settings, viewer, create_widget):
        # Serializer fields are built once per class: what one request sets on its copies
        # (here the URL template of its host) must not show in another's answer.
        settings.ALLOWED_HOSTS = ["testserver", "shop.example.com", "scanner.example.com"]
        created = create_widget(name="Hosted")
        path = f"/api/widgets/{created['id']}/"

        for host in ["shop.example.com", "scanner.example.com", "shop.example.com"]:
            listed = viewer.get("/api/widgets/?ordering=id", HTTP_HOST=host).json()["results"][0]
            detail = viewer.get(path, HTTP_HOST=host).json()
            assert listed["url"] == detail["url"] == f"http://{host}{path}"
