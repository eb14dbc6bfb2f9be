"""Idempotency-Key on POST /api/widgets/, /api/widgets/{id}/adjust/ and /api/adjustments/.

A retry with the same key gets the first answer back, byte for byte, and changes nothing.
The concurrent cases (a retry storm) are in test_concurrency.py.
"""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from widgets import services
from widgets.models import IdempotencyKey, StockMovement, Widget

from .conftest import make_user, token_client

pytestmark = pytest.mark.django_db


def adjust(client, widget_id, key=None, **body):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(f"/api/widgets/{widget_id}/adjust/", body, format="json", headers=headers)


def movements_of(widget_id):
    return StockMovement.objects.filter(widget_id=widget_id).count()


class TestReplay:
    def test_retried_adjustment_is_applied_once_and_replayed_byte_for_byte(self, clerk, create_widget):
        widget = create_widget(stock=10)

        first = adjust(clerk, widget["id"], "sale-1", delta=-3, reason="sold")
        retry = adjust(clerk, widget["id"], "sale-1", delta=-3, reason="sold")

        assert first.status_code == 201, first.content
        assert "Idempotent-Replayed" not in first
        assert retry.status_code == 201
        assert retry["Idempotent-Replayed"] == "true"
        assert retry.content == first.content
        assert retry["Content-Type"] == first["Content-Type"]
        assert retry["ETag"] == first["ETag"]
        assert Widget.objects.get(pk=widget["id"]).stock == 7
        assert movements_of(widget["id"]) == 2  # initial + one sale

    def test_without_a_key_every_request_applies(self, clerk, create_widget):
        widget = create_widget(stock=10)

        adjust(clerk, widget["id"], delta=-3, reason="sold")
        adjust(clerk, widget["id"], delta=-3, reason="sold")

        assert Widget.objects.get(pk=widget["id"]).stock == 4

    def test_same_json_in_another_key_order_and_spacing_is_a_replay(self, clerk, create_widget):
        widget = create_widget(stock=10)
        url = f"/api/widgets/{widget['id']}/adjust/"
        headers = {"Idempotency-Key": "reordered-1"}

        first = clerk.post(url, '{"delta": -3, "reason": "sold"}', content_type="application/json", headers=headers)
        retry = clerk.post(url, '{ "reason":"sold",\n  "delta":-3 }', content_type="application/json", headers=headers)

        assert first.status_code == 201, first.content
        assert retry.status_code == 201, retry.content
        assert retry["Idempotent-Replayed"] == "true"
        assert retry.content == first.content
        assert Widget.objects.get(pk=widget["id"]).stock == 7

    def test_retried_widget_create_makes_one_widget(self, manager):
        body = {"name": "Retry me", "stock": 5}
        first = manager.post("/api/widgets/", body, format="json", headers={"Idempotency-Key": "new-widget-1"})
        retry = manager.post("/api/widgets/", body, format="json", headers={"Idempotency-Key": "new-widget-1"})

        assert first.status_code == 201, first.content
        assert (retry.status_code, retry["Idempotent-Replayed"]) == (201, "true")
        assert retry.content == first.content
        assert retry["Location"] == first["Location"]
        assert Widget.objects.filter(name="Retry me").count() == 1

    def test_retried_batch_is_applied_once(self, clerk, create_widget):
        widget = create_widget(stock=10)
        body = {"items": [{"widget": widget["id"], "delta": -2, "reason": "sold"}] * 2}

        first = clerk.post("/api/adjustments/", body, format="json", headers={"Idempotency-Key": "grn-7"})
        retry = clerk.post("/api/adjustments/", body, format="json", headers={"Idempotency-Key": "grn-7"})

        assert first.status_code == 201, first.content
        assert (retry.status_code, retry["Idempotent-Replayed"], retry.content) == (201, "true", first.content)
        assert Widget.objects.get(pk=widget["id"]).stock == 6

    def test_a_refusal_is_replayed_even_after_the_state_changed(self, clerk, create_widget):
        widget = create_widget(stock=1)
        first = adjust(clerk, widget["id"], "sale-2", delta=-3, reason="sold")
        adjust(clerk, widget["id"], delta=10, reason="received")

        retry = adjust(clerk, widget["id"], "sale-2", delta=-3, reason="sold")

        assert first.status_code == 409
        assert first.json()["code"] == "insufficient_stock"
        assert (retry.status_code, retry["Idempotent-Replayed"], retry.content) == (409, "true", first.content)
        assert Widget.objects.get(pk=widget["id"]).stock == 11

    @pytest.mark.parametrize(
        "body, status", [({"delta": 0, "reason": "sold"}, 400), ({"delta": 1, "reason": "received"}, 404)]
    )
    def test_client_errors_are_stored_and_replayed(self, clerk, create_widget, body, status):
        widget_id = create_widget(stock=1)["id"] if status == 400 else 987654

        first = adjust(clerk, widget_id, "oops", **body)
        retry = adjust(clerk, widget_id, "oops", **body)

        assert first.status_code == status
        assert (retry.status_code, retry["Idempotent-Replayed"], retry.content) == (status, "true", first.content)

    def test_keys_of_different_users_never_collide(self, clerk, create_widget):
        other_clerk = token_client(make_user("clerk"))
        widget = create_widget(stock=10)

        mine = adjust(clerk, widget["id"], "shared-key", delta=-1, reason="sold")
        theirs = adjust(other_clerk, widget["id"], "shared-key", delta=-1, reason="sold")

        assert mine.status_code == theirs.status_code == 201
        assert "Idempotent-Replayed" not in theirs
        assert Widget.objects.get(pk=widget["id"]).stock == 8

    def test_the_stored_key_records_request_and_response(self, clerk, create_widget):
        widget = create_widget(stock=10)

        response = adjust(clerk, widget["id"], "audit-1", delta=-1, reason="sold")

        stored = IdempotencyKey.objects.get(key="audit-1")
        assert (stored.user, stored.method, stored.path) == (clerk.user, "POST", f"/api/widgets/{widget['id']}/adjust/")
        assert len(stored.fingerprint) == 64
        assert (stored.response_status, bytes(stored.response_body)) == (201, response.content)


class TestMisuse:
    def test_same_key_with_another_body_is_422_and_changes_nothing(self, clerk, create_widget):
        widget = create_widget(stock=10)
        adjust(clerk, widget["id"], "k1", delta=-1, reason="sold")

        response = adjust(clerk, widget["id"], "k1", delta=-2, reason="sold")

        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"
        assert Widget.objects.get(pk=widget["id"]).stock == 9

    def test_same_key_on_another_path_is_422_and_changes_nothing(self, clerk, create_widget):
        first, second = create_widget(stock=10), create_widget(stock=10)
        adjust(clerk, first["id"], "k2", delta=-1, reason="sold")

        response = adjust(clerk, second["id"], "k2", delta=-1, reason="sold")

        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"
        assert Widget.objects.get(pk=second["id"]).stock == 10

    @pytest.mark.parametrize(
        "key",
        ["", "x" * 256, "caf\u00e9", "tab\there", "new\x7fline"],
        ids=["empty", "too-long", "non-ascii", "tab", "del"],
    )
    def test_malformed_key_is_400_naming_the_header_and_changes_nothing(self, clerk, create_widget, key):
        widget = create_widget(stock=10)

        response = adjust(clerk, widget["id"], key, delta=-1, reason="sold")

        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()
        assert Widget.objects.get(pk=widget["id"]).stock == 10
        assert not IdempotencyKey.objects.exists()

    def test_longest_allowed_key_is_accepted(self, clerk, create_widget):
        widget = create_widget(stock=10)
        key = "~ A-z0-9!" * 28 + "abc"  # 255 printable characters, spaces included

        assert len(key) == 255
        assert adjust(clerk, widget["id"], key, delta=-1, reason="sold").status_code == 201
        assert adjust(clerk, widget["id"], key, delta=-1, reason="sold")["Idempotent-Replayed"] == "true"

    def test_anonymous_and_unpermitted_requests_store_no_key(self, anon, viewer, create_widget):
        widget = create_widget(stock=10)

        assert adjust(anon, widget["id"], "k3", delta=-1, reason="sold").status_code == 401
        assert adjust(viewer, widget["id"], "k3", delta=-1, reason="sold").status_code == 403
        assert not IdempotencyKey.objects.exists()


class TestServerErrors:
    def test_a_5xx_is_not_stored_so_the_retry_runs_afresh(self, clerk, create_widget, monkeypatch):
        widget = create_widget(stock=10)
        real_adjust = services.adjust_stock

        def adjust_then_fail(**kwargs):
            real_adjust(**kwargs)  # the effect happens, then the request fails
            raise RuntimeError("simulated crash after the write")

        monkeypatch.setattr(services, "adjust_stock", adjust_then_fail)
        failing = APIClient(raise_request_exception=False)
        failing.credentials(HTTP_AUTHORIZATION=f"Token {clerk.raw_key}")
        crashed = adjust(failing, widget["id"], "k4", delta=-1, reason="sold")
        monkeypatch.setattr(services, "adjust_stock", real_adjust)

        retry = adjust(clerk, widget["id"], "k4", delta=-1, reason="sold")

        assert crashed.status_code == 500
        assert crashed.json()["code"] == "server_error"
        assert retry.status_code == 201
        assert "Idempotent-Replayed" not in retry
        assert Widget.objects.get(pk=widget["id"]).stock == 9  # the crashed attempt left nothing


class TestPurge:
    def test_purge_removes_keys_older_than_24_hours_only(self, clerk, create_widget):
        widget = create_widget(stock=10)
        adjust(clerk, widget["id"], "old", delta=-1, reason="sold")
        adjust(clerk, widget["id"], "recent", delta=-1, reason="sold")
        IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))
        IdempotencyKey.objects.filter(key="recent").update(created_at=timezone.now() - timedelta(hours=23))

        call_command("purge_idempotency_keys", verbosity=0)

        assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["recent"]
        assert adjust(clerk, widget["id"], "recent", delta=-1, reason="sold")["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in adjust(clerk, widget["id"], "old", delta=-1, reason="sold")

    def test_purge_with_longer_retention_keeps_more(self, clerk, create_widget):
        widget = create_widget(stock=10)
        adjust(clerk, widget["id"], "two-days", delta=-1, reason="sold")
        IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=48))

        call_command("purge_idempotency_keys", "--hours", "72", verbosity=0)

        assert IdempotencyKey.objects.count() == 1

    def test_purge_refuses_a_retention_under_24_hours(self):
        with pytest.raises(CommandError, match="at least 24"):
            call_command("purge_idempotency_keys", "--hours", "1")


class TestPurgeInPassing:
    """Without any scheduler, new keys now and then clear out the expired ones."""

    def age(self, key, hours):
        IdempotencyKey.objects.filter(key=key).update(created_at=timezone.now() - timedelta(hours=hours))

    def test_a_new_key_deletes_expired_keys_once_its_request_commits(
        self, settings, clerk, create_widget, django_capture_on_commit_callbacks
    ):
        settings.IDEMPOTENCY_PURGE_EVERY = 1  # every new key purges
        widget = create_widget(stock=10)
        for key, hours in (("expired", 25), ("young", 23)):
            adjust(clerk, widget["id"], key, delta=-1, reason="sold")
            self.age(key, hours)

        with django_capture_on_commit_callbacks(execute=True):
            response = adjust(clerk, widget["id"], "new", delta=-1, reason="sold")

        assert response.status_code == 201
        assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == ["new", "young"]
        assert Widget.objects.get(pk=widget["id"]).stock == 7

    def test_replays_and_unkeyed_requests_purge_nothing(
        self, settings, clerk, create_widget, django_capture_on_commit_callbacks
    ):
        settings.IDEMPOTENCY_PURGE_EVERY = 1
        widget = create_widget(stock=10)
        adjust(clerk, widget["id"], "expired", delta=-1, reason="sold")
        adjust(clerk, widget["id"], "replayed", delta=-1, reason="sold")
        self.age("expired", 25)

        with django_capture_on_commit_callbacks(execute=True):
            assert adjust(clerk, widget["id"], "replayed", delta=-1, reason="sold")["Idempotent-Replayed"] == "true"
            assert adjust(clerk, widget["id"], delta=-1, reason="sold").status_code == 201

        assert IdempotencyKey.objects.filter(key="expired").exists()

    def test_zero_turns_the_purge_in_passing_off(
        self, settings, clerk, create_widget, django_capture_on_commit_callbacks
    ):
        settings.IDEMPOTENCY_PURGE_EVERY = 0
        widget = create_widget(stock=10)
        adjust(clerk, widget["id"], "expired", delta=-1, reason="sold")
        self.age("expired", 25)

        with django_capture_on_commit_callbacks(execute=True):
            adjust(clerk, widget["id"], "new", delta=-1, reason="sold")

        assert IdempotencyKey.objects.filter(key="expired").exists()

    def test_one_purge_deletes_a_bounded_batch_oldest_first(
        self, settings, monkeypatch, clerk, create_widget, django_capture_on_commit_callbacks
    ):
        from widgets.api import idempotency

        monkeypatch.setattr(idempotency, "PURGE_BATCH", 2)
        settings.IDEMPOTENCY_PURGE_EVERY = 1
        widget = create_widget(stock=10)
        for key, hours in (("oldest", 30), ("older", 28), ("old", 26)):
            adjust(clerk, widget["id"], key, delta=-1, reason="sold")
            self.age(key, hours)

        with django_capture_on_commit_callbacks(execute=True):
            adjust(clerk, widget["id"], "new", delta=-1, reason="sold")

        assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == ["new", "old"]

    def test_a_failing_purge_does_not_fail_the_request(
        self, settings, monkeypatch, caplog, clerk, create_widget, django_capture_on_commit_callbacks
    ):
        def broken(**kwargs):
            raise RuntimeError("purge failed")

        settings.IDEMPOTENCY_PURGE_EVERY = 1
        widget = create_widget(stock=10)
        monkeypatch.setattr(services, "purge_idempotency_keys", broken)

        with django_capture_on_commit_callbacks(execute=True):
            response = adjust(clerk, widget["id"], "new", delta=-1, reason="sold")

        assert response.status_code == 201
        assert "purge failed" in caplog.text
        assert adjust(clerk, widget["id"], "new", delta=-1, reason="sold")["Idempotent-Replayed"] == "true"
