"""Events and webhooks, end to end: a change through the API, the real database task backend
and ``manage.py db_worker``, and a real HTTP receiver on the loopback that checks every
signature with the Standard Webhooks library (docs/events.md)."""

import io
import json
import os
import signal
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from standardwebhooks import Webhook

from webhooks.models import Delivery, Event, WebhookSubscription
from widgets import services
from widgets.models import Widget

from .conftest import IS_POSTGRES
from .webhook_receiver import running_receiver

needs_redis = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL: subscribers kept in Redis")

# The worker commits as it goes, so these tests use real transactions (the roles kept).
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def receiver(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on the loopback
    settings.WEBHOOK_RETRY_BASE_DELAY = 0  # retries are due at once, so one worker run sees them all
    with running_receiver() as receiver:
        yield receiver


def run_worker():
    """``manage.py db_worker --batch``: run every task that is ready, then stop."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)}
    try:
        call_command("db_worker", batch=True, interval=0, startup_delay=False, reload=False, verbosity=0)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def subscribe(client, url, event_types=("*",), **extra):
    response = client.post("/api/webhooks/", {"url": url, "event_types": list(event_types), **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def verified(secret, request) -> dict:
    """The payload, if its signature verifies as the Standard Webhooks library does it."""
    return Webhook(secret).verify(request["body"], request["headers"])


def deliveries(client, subscription, **params):
    response = client.get(f"/api/webhooks/{subscription['id']}/deliveries/", params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


class TestDelivery:
    def test_an_adjustment_is_delivered_signed_and_logged(self, manager, clerk, create_widget, receiver):
        widget = create_widget(stock=10)
        subscription = subscribe(manager, receiver.url, ["stock.adjusted"])
        assert subscription["secret"].startswith("whsec_")

        adjusted = clerk.post(
            f"/api/widgets/{widget['id']}/adjust/", {"delta": -3, "reason": "sold", "note": "order 7"}
        )
        run_worker()

        [request] = receiver.wait_for(1)
        payload = verified(subscription["secret"], request)
        assert request["path"] == "/hooks/inventory"
        assert request["headers"]["webhook-id"] == payload["id"]
        assert payload["type"] == "stock.adjusted"
        assert payload["request_id"] == adjusted["X-Request-ID"]
        assert payload["sequence"] == Widget.objects.get(pk=widget["id"]).version
        movement = adjusted.json()
        assert payload["data"]["movement"] == movement
        assert payload["data"]["widget"]["stock"] == 7
        [logged] = deliveries(manager, subscription)
        assert (logged["status"], logged["attempts"], logged["last_status_code"]) == ("delivered", 1, 200)
        assert logged["event"]["id"] == payload["id"] and logged["response_excerpt"] == "ok"
        assert logged["last_duration_ms"] is not None and logged["next_attempt_at"] is None

    def test_event_data_is_the_object_as_the_api_shows_it(self, manager, create_category, receiver):
        subscription = subscribe(manager, receiver.url, ["widget.created", "category.updated"])
        category = create_category(name="Hand Tools")
        created = manager.post(
            "/api/widgets/", {"name": "Spanner", "category": category["id"], "price": "12.50"}
        ).json()
        manager.patch(f"/api/categories/{category['id']}/", {"description": "Spanners and such"})
        run_worker()

        payloads = [verified(subscription["secret"], r) for r in receiver.wait_for(2)]
        by_type = {p["type"]: p for p in payloads}
        shown = manager.get(f"/api/widgets/{created['id']}/").json()
        assert by_type["widget.created"]["data"] == {k: v for k, v in shown.items() if k != "url"}
        shown = manager.get(f"/api/categories/{category['id']}/").json()
        assert by_type["category.updated"]["data"] == {k: v for k, v in shown.items() if k != "url"}

    def test_only_the_subscribed_event_types_are_sent(self, manager, clerk, create_widget, receiver):
        subscription = subscribe(manager, receiver.url, ["widget.deleted"])
        widget = create_widget()
        manager.patch(f"/api/widgets/{widget['id']}/", {"name": "Renamed"})
        manager.delete(f"/api/widgets/{widget['id']}/")
        run_worker()

        [request] = receiver.wait_for(1)
        payload = verified(subscription["secret"], request)
        assert (payload["type"], payload["data"]["id"], payload["data"]["name"]) == (
            "widget.deleted",
            widget["id"],
            "Renamed",
        )
        assert Event.objects.count() == 1  # the events nobody wanted were never stored

    def test_a_batch_sends_one_stock_adjusted_per_movement(self, manager, clerk, create_widget, receiver):
        first, second = create_widget(stock=5), create_widget(stock=5)
        subscription = subscribe(manager, receiver.url, ["stock.adjusted"])
        items = [
            {"widget": first["id"], "delta": 2, "reason": "received"},
            {"widget": second["id"], "delta": -1, "reason": "sold"},
            {"widget": first["id"], "delta": -4, "reason": "sold"},
        ]
        response = clerk.post("/api/adjustments/", {"items": items})
        assert response.status_code == 201, response.content
        run_worker()

        payloads = [verified(subscription["secret"], r) for r in receiver.wait_for(3)]
        movements = sorted((p["data"]["movement"]["id"], p["data"]["movement"]["stock_after"]) for p in payloads)
        assert movements == [(m["id"], m["stock_after"]) for m in response.json()["movements"]]

    def test_a_batch_with_more_deliveries_than_one_task_carries_is_delivered_whole(
        self, manager, clerk, create_widget, receiver
    ):
        widget = create_widget(stock=1000)
        subscription = subscribe(manager, receiver.url, ["stock.adjusted"])
        items = [{"widget": widget["id"], "delta": -1, "reason": "sold"}] * 300  # 300 deliveries: two tasks
        response = clerk.post("/api/adjustments/", {"items": items})
        assert response.status_code == 201, response.content
        run_worker()

        movement_ids = {movement["id"] for movement in response.json()["movements"]}
        sent = [verified(subscription["secret"], r)["data"]["movement"]["id"] for r in receiver.wait_for(300)]
        assert sorted(sent) == sorted(movement_ids)
        assert Delivery.objects.filter(status="delivered").count() == 300

    def test_a_csv_import_sends_the_events_of_its_rows(self, manager, create_widget, receiver, tmp_path):
        create_widget(sku="BOLT-1", name="Bolt", stock=10, reorder_level=2)
        subscription = subscribe(manager, receiver.url, ["widget.created", "stock.adjusted", "widget.low_stock"])
        path = tmp_path / "widgets.csv"
        path.write_text("sku,name,stock\nBOLT-1,Bolt,1\nNUT-1,Nut,4\n", encoding="utf-8")
        call_command("import_widgets", str(path), "--stock-corrections", stdout=io.StringIO())
        run_worker()

        payloads = [verified(subscription["secret"], r) for r in receiver.wait_for(4)]
        got = sorted((p["type"], p["data"].get("sku") or p["data"]["widget"]["sku"]) for p in payloads)
        assert got == [
            ("stock.adjusted", "BOLT-1"),
            ("stock.adjusted", "NUT-1"),
            ("widget.created", "NUT-1"),
            ("widget.low_stock", "BOLT-1"),
        ]


class TestTransactional:
    def test_a_change_that_rolls_back_sends_nothing(self, manager, clerk, create_widget, receiver):
        widget = create_widget(stock=3)
        subscribe(manager, receiver.url)
        with pytest.raises(RuntimeError), transaction.atomic():
            services.adjust_stock(widget_id=widget["id"], delta=-1, reason="sold")
            raise RuntimeError("the caller's transaction fails after the adjustment")
        oversold = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -5, "reason": "sold"})
        half_batch = clerk.post(
            "/api/adjustments/",
            {
                "items": [
                    {"widget": widget["id"], "delta": -1, "reason": "sold"},
                    {"widget": widget["id"], "delta": -9, "reason": "sold"},
                ]
            },
        )
        run_worker()

        assert (oversold.status_code, half_batch.status_code) == (409, 409)
        assert (Event.objects.count(), Delivery.objects.count(), receiver.requests) == (0, 0, [])
        # The same adjustment committed is sent: the test above could have seen one.
        clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"})
        run_worker()
        [request] = receiver.wait_for(1)
        assert json.loads(request["body"])["type"] == "stock.adjusted"


class TestThresholds:
    def levels(self, receiver, secret, count):
        return [(p["type"], p["data"]["stock"]) for p in (verified(secret, r) for r in receiver.wait_for(count))]

    def test_crossing_the_reorder_level_twice_in_a_row_sends_one_low_stock(
        self, manager, clerk, create_widget, receiver
    ):
        subscription = subscribe(manager, receiver.url, ["widget.low_stock"])
        widget = create_widget(stock=10, reorder_level=5)
        adjust = f"/api/widgets/{widget['id']}/adjust/"
        for delta in (-6, -1, +1, -1):  # 4, 3, 4, 3: below from the first step on
            assert clerk.post(adjust, {"delta": delta, "reason": "correction"}).status_code == 201
        run_worker()
        assert self.levels(receiver, subscription["secret"], 1) == [("widget.low_stock", 4)]

        for delta in (+10, -10):  # back above (13), then below again (3): a new crossing
            clerk.post(adjust, {"delta": delta, "reason": "correction"})
        run_worker()
        assert self.levels(receiver, subscription["secret"], 2)[1:] == [("widget.low_stock", 3)]
        assert len(receiver.requests) == 2

    def test_out_of_stock_and_back_in_stock_fire_on_reaching_and_leaving_zero(
        self, manager, clerk, create_widget, receiver
    ):
        subscription = subscribe(manager, receiver.url, ["widget.out_of_stock", "widget.back_in_stock"])
        widget = create_widget(stock=2, reorder_level=0)
        adjust = f"/api/widgets/{widget['id']}/adjust/"
        for delta in (-2, +1, -1, +3, -1):  # 0, 1, 0, 3, 2
            assert clerk.post(adjust, {"delta": delta, "reason": "correction"}).status_code == 201
        run_worker()

        assert self.levels(receiver, subscription["secret"], 4) == [
            ("widget.out_of_stock", 0),
            ("widget.back_in_stock", 1),
            ("widget.out_of_stock", 0),
            ("widget.back_in_stock", 3),
        ]

    def test_raising_the_reorder_level_over_the_stock_is_a_crossing(self, manager, create_widget, receiver):
        subscription = subscribe(manager, receiver.url, ["widget.low_stock"])
        widget = create_widget(stock=5, reorder_level=2)
        manager.patch(f"/api/widgets/{widget['id']}/", {"reorder_level": 5})
        manager.patch(f"/api/widgets/{widget['id']}/", {"reorder_level": 6})
        run_worker()
        assert self.levels(receiver, subscription["secret"], 1) == [("widget.low_stock", 5)]


class TestRetries:
    def test_500_500_200_is_delivered_on_the_third_attempt_with_three_attempts_logged(
        self, manager, create_widget, receiver
    ):
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        receiver.statuses = [500, 500, 200]
        create_widget()
        run_worker()

        requests = receiver.wait_for(3)
        assert len({r["headers"]["webhook-id"] for r in requests}) == 1  # one message, sent three times
        assert all(verified(subscription["secret"], r)["type"] == "widget.created" for r in requests)
        [logged] = deliveries(manager, subscription)
        assert (logged["status"], logged["attempts"], logged["last_status_code"]) == ("delivered", 3, 200)

    def test_a_failure_is_retried_later_with_backoff(self, settings, manager, create_widget, receiver):
        settings.WEBHOOK_RETRY_BASE_DELAY = 60
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        receiver.statuses = [503]
        create_widget()
        run_worker()

        [logged] = deliveries(manager, subscription)
        assert (logged["status"], logged["attempts"], logged["last_status_code"], logged["last_error"]) == (
            "pending",
            1,
            503,
            "HTTP 503",
        )
        wait = (timezone.datetime.fromisoformat(logged["next_attempt_at"]) - timezone.now()).total_seconds()
        assert 30 < wait <= 75  # 60 s +-25% jitter
        assert len(receiver.requests) == 1  # not due yet: the worker left it

    def test_a_receiver_that_does_not_answer_in_time_is_retried_later(self, settings, manager, create_widget, receiver):
        settings.WEBHOOK_TIMEOUT = 0.5  # 10 s in production
        settings.WEBHOOK_RETRY_BASE_DELAY = 60  # the next attempt is not due during this test
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        receiver.hanging = True  # takes the request, never answers
        create_widget()
        run_worker()

        [logged] = deliveries(manager, subscription)
        assert (logged["status"], logged["attempts"], logged["last_error"]) == ("pending", 1, "Timed out")
        assert logged["last_status_code"] is None and logged["next_attempt_at"] is not None
        assert 400 <= logged["last_duration_ms"] < 5000

    def test_redirects_are_not_followed(self, manager, create_widget, receiver, settings):
        settings.WEBHOOK_RETRY_FOR = 0
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        receiver.statuses = [302]
        create_widget()
        run_worker()

        [logged] = deliveries(manager, subscription)
        assert (logged["status"], logged["last_status_code"]) == ("failed", 302)
        assert len(receiver.requests) == 1

    def test_a_refused_connection_fails_after_the_retry_window_and_disables_the_subscription(
        self, settings, manager, create_widget, receiver
    ):
        settings.WEBHOOK_RETRY_FOR = 0
        settings.WEBHOOK_DISABLE_AFTER = 0
        with running_receiver() as gone:
            url = gone.url  # a port nobody listens on any more
        subscription = subscribe(manager, url, ["widget.created"])
        create_widget()
        run_worker()

        [logged] = deliveries(manager, subscription)
        assert (logged["status"], logged["attempts"], logged["last_status_code"]) == ("failed", 1, None)
        assert "refused" in logged["last_error"]
        shown = manager.get(f"/api/webhooks/{subscription['id']}/").json()
        assert shown["is_active"] is False and "no successful delivery since" in shown["disabled_reason"]
        create_widget()  # a disabled subscription gets nothing new
        assert Delivery.objects.count() == 1

        resumed = manager.patch(f"/api/webhooks/{subscription['id']}/", {"is_active": True}).json()
        assert (resumed["is_active"], resumed["disabled_reason"], resumed["disabled_at"]) == (True, "", None)

    def test_the_response_excerpt_is_at_most_1_kb(self, manager, create_widget, receiver):
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        receiver.body = b"x" * 5000
        create_widget()
        run_worker()
        [logged] = deliveries(manager, subscription)
        assert logged["status"] == "delivered" and logged["response_excerpt"] == "x" * 1024


class TestActions:
    def test_redeliver_sends_the_same_message_again(self, manager, create_widget, receiver):
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        create_widget()
        run_worker()
        [logged] = deliveries(manager, subscription)

        response = manager.post(f"/api/webhooks/{subscription['id']}/deliveries/{logged['id']}/redeliver/")
        assert response.status_code == 202, response.content
        run_worker()

        first, again = receiver.wait_for(2)
        assert first["headers"]["webhook-id"] == again["headers"]["webhook-id"]
        assert verified(subscription["secret"], again)["type"] == "widget.created"
        [logged] = deliveries(manager, subscription)
        assert (logged["status"], logged["attempts"]) == ("delivered", 2)

    def test_redeliver_of_another_subscriptions_delivery_is_404(self, manager, create_widget, receiver):
        mine, other = subscribe(manager, receiver.url), subscribe(manager, receiver.url)
        create_widget()
        delivery = Delivery.objects.get(subscription_id=other["id"])
        response = manager.post(f"/api/webhooks/{mine['id']}/deliveries/{delivery.pk}/redeliver/")
        assert response.status_code == 404, response.content

    def test_ping_sends_a_signed_ping_event(self, manager, receiver):
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        response = manager.post(f"/api/webhooks/{subscription['id']}/ping/")
        assert response.status_code == 202 and response.json()["event"]["type"] == "webhook.ping"
        run_worker()
        [request] = receiver.wait_for(1)
        assert verified(subscription["secret"], request)["data"] == {
            "subscription": subscription["id"],
            "url": receiver.url,
        }

    def test_rotating_the_secret_signs_with_the_new_one_only(self, manager, receiver):
        subscription = subscribe(manager, receiver.url)
        rotated = manager.post(f"/api/webhooks/{subscription['id']}/rotate-secret/")
        assert rotated.status_code == 200
        new_secret = rotated.json()["secret"]
        assert new_secret.startswith("whsec_") and new_secret != subscription["secret"]
        assert "secret" not in manager.get(f"/api/webhooks/{subscription['id']}/").json()  # shown once
        manager.post(f"/api/webhooks/{subscription['id']}/ping/")
        run_worker()
        [request] = receiver.wait_for(1)
        assert verified(new_secret, request)["type"] == "webhook.ping"
        with pytest.raises(Exception, match="No matching signature"):
            verified(subscription["secret"], request)

    def test_the_delivery_log_filters_by_status(self, manager, create_widget, receiver, settings):
        settings.WEBHOOK_RETRY_FOR = 0
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        receiver.statuses = [500]
        create_widget(), create_widget()
        run_worker()
        assert [d["status"] for d in deliveries(manager, subscription, status="failed")] == ["failed"]
        assert [d["status"] for d in deliveries(manager, subscription, status="delivered")] == ["delivered"]
        response = manager.get(f"/api/webhooks/{subscription['id']}/deliveries/", {"status": "lost"})
        assert response.status_code == 400 and "status" in response.json()


class TestCommands:
    def test_deliver_pending_enqueues_a_delivery_whose_task_was_lost(self, manager, create_widget, receiver):
        from django_tasks_db.models import DBTaskResult

        subscription = subscribe(manager, receiver.url, ["widget.created"])
        create_widget()
        DBTaskResult.objects.all().delete()  # as if the worker had died holding it
        run_worker()
        assert receiver.requests == []

        out = io.StringIO()
        call_command("deliver_pending", stdout=out)
        run_worker()
        assert "Enqueued 1 pending" in out.getvalue()
        assert verified(subscription["secret"], receiver.wait_for(1)[0])["type"] == "widget.created"

    def test_purge_deletes_old_finished_deliveries_and_their_events(self, manager, create_widget, receiver):
        subscribe(manager, receiver.url, ["widget.created"])
        create_widget(), create_widget()
        run_worker()
        old = timezone.now() - timedelta(days=40)
        first = Delivery.objects.order_by("id").first()
        Delivery.objects.filter(pk=first.pk).update(created_at=old)
        Event.objects.filter(pk=first.event_id).update(occurred_at=old)

        out = io.StringIO()
        call_command("purge_webhook_deliveries", stdout=out)
        assert "Deleted 1 delivery(ies), 1 event(s)" in out.getvalue()
        assert Delivery.objects.count() == 1 and Event.objects.count() == 1


class TestCost:
    def test_an_adjustment_with_a_subscription_costs_a_fixed_number_of_queries(
        self, manager, clerk, create_widget, receiver, django_assert_max_num_queries
    ):
        widget = create_widget(stock=5)
        subscribe(manager, receiver.url)
        # The first adjustment on a connection also PREPAREs its statement (widgets/prepared.py).
        assert clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"}).status_code == 201
        # auth (3), subscriptions (none when Redis keeps them), BEGIN, COMMIT; on PostgreSQL
        # one statement for the update and the movement and one for the event, its delivery
        # and their task; elsewhere lock, units reserved, update, movement, event, delivery, task.
        with django_assert_max_num_queries(8 if IS_POSTGRES else 13):
            response = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"})
        assert response.status_code == 201
        assert Delivery.objects.filter(event__type="stock.adjusted").count() == 2

    @needs_redis
    def test_with_redis_writes_read_the_subscribers_from_the_cache(
        self, manager, clerk, create_widget, receiver, django_assert_max_num_queries
    ):
        widget = create_widget(stock=5)
        subscribe(manager, receiver.url)
        clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"})  # keeps them
        with CaptureQueriesContext(connection) as queries:
            response = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"})
        assert response.status_code == 201
        assert not [q for q in queries.captured_queries if "webhooks_webhooksubscription" in q["sql"]]
        assert Delivery.objects.filter(event__type="stock.adjusted").count() == 2


class TestSubscribersKept:
    """Writes keep who is subscribed (in Redis when there is one); every change to a
    subscription, from the API or the worker, reaches the very next write."""

    def adjust(self, clerk, widget):
        response = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"})
        assert response.status_code == 201, response.content

    def test_a_new_subscription_gets_the_next_write(self, manager, clerk, create_widget, receiver):
        widget = create_widget(stock=9)
        self.adjust(clerk, widget)  # no subscribers yet, and that is what is kept
        subscription = subscribe(manager, receiver.url)
        self.adjust(clerk, widget)
        assert [d["event"]["type"] for d in deliveries(manager, subscription)] == ["stock.adjusted"]

    def test_a_paused_subscription_gets_nothing_from_the_next_write(self, manager, clerk, create_widget, receiver):
        widget = create_widget(stock=9)
        subscription = subscribe(manager, receiver.url)
        self.adjust(clerk, widget)
        paused = manager.patch(f"/api/webhooks/{subscription['id']}/", {"is_active": False}, format="json")
        assert paused.status_code == 200, paused.content
        self.adjust(clerk, widget)
        assert len(deliveries(manager, subscription)) == 1

    def test_changed_event_types_apply_to_the_next_write(self, manager, clerk, create_widget, receiver):
        widget = create_widget(stock=9)
        subscription = subscribe(manager, receiver.url, event_types=["widget.updated"])
        self.adjust(clerk, widget)
        changed = manager.patch(
            f"/api/webhooks/{subscription['id']}/", {"event_types": ["stock.adjusted"]}, format="json"
        )
        assert changed.status_code == 200, changed.content
        self.adjust(clerk, widget)
        assert [d["event"]["type"] for d in deliveries(manager, subscription)] == ["stock.adjusted"]

    def test_a_deleted_subscription_does_not_fail_the_next_write(self, manager, clerk, create_widget, receiver):
        widget = create_widget(stock=9)
        kept, deleted = subscribe(manager, receiver.url), subscribe(manager, receiver.url)
        self.adjust(clerk, widget)
        assert manager.delete(f"/api/webhooks/{deleted['id']}/").status_code == 204
        self.adjust(clerk, widget)
        assert len(deliveries(manager, kept)) == 2
        assert Delivery.objects.count() == 2

    def test_a_subscription_the_worker_disables_gets_nothing_from_the_next_write(
        self, manager, clerk, create_widget, receiver, settings
    ):
        settings.WEBHOOK_DISABLE_AFTER = 0  # the first failure is enough
        widget = create_widget(stock=9)
        subscription = subscribe(manager, receiver.url)
        receiver.statuses = [500]
        self.adjust(clerk, widget)
        run_worker()
        assert WebhookSubscription.objects.get(pk=subscription["id"]).is_active is False
        self.adjust(clerk, widget)
        assert len(deliveries(manager, subscription)) == 1


class TestSubscriptions:
    @pytest.mark.parametrize(
        "url",
        [
            "http://93.184.216.34/hook",  # not https
            "https://169.254.169.254/latest/meta-data/",  # EC2 instance metadata
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://192.168.0.10/hook",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://224.0.0.1/hook",
            "https://localhost/hook",  # a name resolving to the loopback
            "https://user:pw@93.184.216.34/hook",
        ],
    )
    def test_private_and_insecure_urls_are_refused_naming_url(self, manager, url):
        response = manager.post("/api/webhooks/", {"url": url, "event_types": ["*"]}, format="json")
        assert response.status_code == 400, response.content
        assert list(response.json()) == ["url"]
        assert not WebhookSubscription.objects.exists()

    def test_a_public_https_url_is_accepted_and_the_secret_shown_once(self, manager):
        response = manager.post(
            "/api/webhooks/", {"url": "https://93.184.216.34/hook", "event_types": ["stock.adjusted"]}
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["secret"].startswith("whsec_") and body["is_active"] is True
        listed = manager.get("/api/webhooks/").json()["results"]
        assert [s["id"] for s in listed] == [body["id"]] and "secret" not in listed[0]

    @pytest.mark.parametrize(
        "event_types",
        [[], ["stock.moved"], ["*", "stock.adjusted"], ["webhook.ping"], "*", ["stock.adjusted", "stock.adjusted"]],
    )
    def test_bad_event_types_are_refused_naming_event_types(self, manager, event_types):
        response = manager.post("/api/webhooks/", {"url": "https://93.184.216.34/hook", "event_types": event_types})
        assert response.status_code == 400, response.content
        assert list(response.json()) == ["event_types"]

    def test_an_address_that_became_private_is_refused_at_delivery(self, settings, manager, create_widget, receiver):
        settings.WEBHOOK_RETRY_FOR = 0
        subscription = subscribe(manager, receiver.url, ["widget.created"])
        settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False  # e.g. its DNS now points inside
        create_widget()
        run_worker()

        assert receiver.requests == []
        [logged] = deliveries(manager, subscription)
        assert logged["status"] == "failed" and logged["last_error"].startswith("Refused: The URL must use https")

    def test_the_admin_refuses_a_private_url_too(self, client):
        from tests.conftest import make_user

        client.force_login(make_user(is_staff=True, is_superuser=True))
        response = client.post(
            "/admin/webhooks/webhooksubscription/add/",
            {"url": "https://169.254.169.254/", "event_types": '["*"]', "is_active": "on", "description": ""},
        )
        assert response.status_code == 200  # the form again, with the error
        assert "link-local" in response.content.decode()
        assert not WebhookSubscription.objects.exists()
