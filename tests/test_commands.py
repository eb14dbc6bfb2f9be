"""Management commands: seed_widgets, issue_token, check_ledger."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import make_user
from widgets.models import Category, StockMovement, Widget

pytestmark = pytest.mark.django_db


def run(*args, **options):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def snapshot():
    """Everything seeded, minus database ids (which a fresh database may number differently)."""
    widgets = Widget.objects.order_by("sku").values_list(
        "sku", "name", "description", "category__name", "price", "stock", "reorder_level", "is_active"
    )
    movements = StockMovement.objects.order_by("widget__sku", "created_at", "id").values_list(
        "widget__sku", "delta", "reason", "stock_after", "created_by__username"
    )
    return list(widgets), list(movements), list(Category.objects.values_list("name", "slug"))


class TestSeedWidgets:
    def test_same_seed_gives_the_same_data_in_a_fresh_database(self):
        with transaction.atomic():
            run("seed_widgets", count=30, seed=7)
            first = snapshot()
            transaction.set_rollback(True)  # back to an empty database
        assert not Widget.objects.exists()

        run("seed_widgets", count=30, seed=7)

        assert snapshot() == first
        assert len(first[0]) == 30 and len(first[2]) == 8
        assert len(first[1]) > 30 * 40  # a history, not one movement each

    def test_another_seed_gives_other_data(self):
        run("seed_widgets", count=30, seed=7)
        seven = snapshot()[0]
        run("seed_widgets", count=30, seed=8)

        eight = [row for row in snapshot()[0] if row[0].startswith("S8-")]
        assert [row[1:] for row in eight] != [row[1:] for row in seven]

    def test_second_run_adds_the_next_widgets(self):
        run("seed_widgets", count=10, seed=3)
        first = snapshot()[0]

        output = run("seed_widgets", count=10, seed=3)

        widgets = snapshot()[0]
        assert len(widgets) == 20
        assert widgets[:10] == first
        assert [row[0] for row in widgets] == [f"S3-{n:07d}" for n in range(20)]
        assert "Seeded 10 widgets with 90 days of history (20 in total)" in output

    def test_if_empty_does_nothing_when_widgets_exist(self):
        run("seed_widgets", count=5, if_empty=True)

        output = run("seed_widgets", count=5, if_empty=True)

        assert Widget.objects.count() == 5
        assert "not seeding" in output

    def test_without_history_only_initial_movements_are_written(self):
        run("seed_widgets", count=200, seed=2, batch_size=64, days=0)

        assert "Ledger invariant holds for 200 widgets" in run("check_ledger")
        stocked = Widget.objects.filter(stock__gt=0)
        assert StockMovement.objects.filter(reason="initial").count() == stocked.count() > 0
        assert not StockMovement.objects.exclude(reason="initial").exists()

    def test_default_history_looks_like_a_business(self):
        output = run("seed_widgets", count=280, seed=2, batch_size=100)

        assert "Seeded 280 widgets with 90 days of history" in output
        assert "Ledger invariant holds for 280 widgets" in run("check_ledger")
        movements = list(
            StockMovement.objects.order_by("id").values_list(
                "widget_id", "delta", "reason", "stock_after", "created_at"
            )
        )
        assert {reason for _, _, reason, _, _ in movements} == {"initial", "received", "sold", "returned", "damaged"}
        # Back-dated over 90 days up to now, never in the future.
        today = timezone.localdate()
        days = {timezone.localdate(at) for *_, at in movements}
        assert min(days) == today - timedelta(days=90) and max(days) >= today - timedelta(days=1)
        assert max(at for *_, at in movements) <= timezone.now()
        # Every movement's stock_after is its widget's running total, in id (= time) order.
        running, last_at = {}, {}
        for widget, delta, _, stock_after, at in movements:
            running[widget] = running.get(widget, 0) + delta
            assert stock_after == running[widget] >= 0
            assert at >= last_at.get(widget, at)
            last_at[widget] = at
        # A weekly rhythm: Fridays sell more than twice what Sundays do.
        sold_by_weekday = [0] * 7
        for _, delta, reason, _, at in movements:
            if reason == "sold":
                sold_by_weekday[timezone.localtime(at).weekday()] -= delta
        assert sold_by_weekday[4] > 2 * sold_by_weekday[6] > 0
        # 5-10% at or below the reorder level, all the others above it.
        low = Widget.objects.filter(stock__lte=F("reorder_level")).count()
        assert 0.05 * 280 <= low <= 0.10 * 280
        # Widgets were created when their history starts and updated by its last movement.
        widget = Widget.objects.get(sku="S2-0000007")
        assert timezone.localdate(widget.created_at) == today - timedelta(days=90)
        assert widget.updated_at == widget.movements.order_by("-id").first().created_at

    def test_seeded_widgets_are_served_by_the_api(self, viewer):
        run("seed_widgets", count=3)

        body = viewer.get("/api/widgets/", {"ordering": "sku"}).json()

        assert [w["sku"] for w in body["results"]] == ["S1-0000000", "S1-0000001", "S1-0000002"]

    @pytest.mark.parametrize("options", [{"count": -1}, {"count": 5, "batch_size": 0}, {"count": 5, "days": -1}])
    def test_bad_arguments_are_refused(self, options):
        with pytest.raises(CommandError):
            run("seed_widgets", **options)
        assert not Widget.objects.exists()


class TestIssueToken:
    def test_prints_only_the_raw_key_which_then_authenticates(self, create_widget):
        create_widget(name="Visible")
        user = make_user("viewer", username="scanner")

        output = run("issue_token", "scanner", name="warehouse")

        key = output.strip()
        assert output == key + "\n"
        assert " " not in key and key.startswith("wgi_")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        response = client.get("/api/widgets/")
        assert response.status_code == 200
        assert response.json()["results"][0]["name"] == "Visible"
        assert user.api_tokens.get().name == "warehouse"

    def test_bearer_keyword_is_accepted_too(self):
        make_user("viewer", username="bearer")
        key = run("issue_token", "bearer").strip()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

        assert client.get("/api/widgets/").status_code == 200

    def test_unknown_user_is_a_command_error(self):
        with pytest.raises(CommandError, match="No user named 'ghost'"):
            run("issue_token", "ghost")

    @pytest.mark.parametrize("name", ["tab\there", "line\nbreak", "   ", "n" * 101])
    def test_a_name_the_api_would_refuse_is_a_command_error(self, name):
        """The token name obeys the same rule as POST /api/auth/token/ (docs/input-rules.md)."""
        user = make_user("viewer", username="named")

        with pytest.raises(CommandError, match="--name"):
            run("issue_token", "named", name=name)
        assert not user.api_tokens.exists()


class TestCheckLedger:
    def test_passes_on_a_consistent_ledger(self, create_widget, clerk):
        widget = create_widget(stock=4)
        clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"}, format="json")

        assert "Ledger invariant holds for 1 widgets" in run("check_ledger")

    def test_reports_a_widget_whose_stock_drifted_from_its_ledger(self, create_widget):
        widget = create_widget(stock=4, sku="DRIFT-1")
        table = Widget._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET stock = stock + 1 WHERE id = %s", [widget["id"]])
        try:
            with pytest.raises(CommandError) as failure:
                run("check_ledger")
            assert f"widget {widget['id']} (DRIFT-1): stock 5, ledger 4" in str(failure.value)
        finally:  # repaired, so the invariant check after every test passes
            with connection.cursor() as cursor:
                cursor.execute(f"UPDATE {table} SET stock = stock - 1 WHERE id = %s", [widget["id"]])
        assert "holds" in run("check_ledger")

    def test_reports_a_widget_with_stock_but_no_ledger(self, create_widget):
        widget = create_widget(sku="NO-LEDGER")
        table = Widget._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET stock = 3 WHERE id = %s", [widget["id"]])
        try:
            with pytest.raises(CommandError, match="NO-LEDGER"):
                run("check_ledger")
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"UPDATE {table} SET stock = 0 WHERE id = %s", [widget["id"]])
