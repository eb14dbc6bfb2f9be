"""Recording expired reservations: ``manage.py expire_reservations`` and the worker's sweep
store ``expired``, log it and send ``reservation.expired`` (and the stock alerts the expiry
crosses), once per reservation. The API shows ``expired`` from the clock before that.

Events are read from a subscription's delivery log (``GET /api/webhooks/{id}/deliveries/``);
one test runs the worker (``manage.py run_worker --batch``, whose start-up sweep records the
expiries) against a real receiver to check the payload. The clock is time-machine's.
"""

import io
import json
import signal
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from standardwebhooks import Webhook

from .conftest import assert_reservation_invariant, postgres_only
from .test_concurrency import client_for
from .test_reservations import URL, act, reserve, widget_of
from .test_webhooks import deliveries, subscribe
from .webhook_receiver import running_receiver

pytestmark = pytest.mark.django_db

NOWHERE = "http://127.0.0.1:9/hook"  # deliveries stay pending: no worker runs in these tests


@pytest.fixture
def clock(time_machine):
    """A stopped clock two days back (see tests/test_reservations.py); ``clock.shift(s)``."""
    time_machine.move_to(timezone.now() - timedelta(days=2), tick=False)
    yield time_machine
    assert_reservation_invariant()


@pytest.fixture
def subscription(settings, manager):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    return subscribe(manager, NOWHERE)


def expire_reservations(*args) -> int:
    out = io.StringIO()
    call_command("expire_reservations", *args, stdout=out)
    text = out.getvalue()
    assert text.startswith("Recorded ") and text.endswith(" expired reservation(s).\n"), text
    return int(text.split()[1])


def sent(manager, subscription, event_type=None) -> list[str]:
    """The event types delivered to ``subscription``, oldest first (of ``event_type`` only if given)."""
    types = [d["event"]["type"] for d in reversed(deliveries(manager, subscription, limit=500))]
    return [t for t in types if event_type is None or t == event_type]


class TestRecording:
    def test_an_expired_reservation_is_recorded_once_with_one_event(
        self, clerk, manager, create_widget, clock, subscription
    ):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2), ttl_seconds=60).json()
        clock.shift(59)
        assert expire_reservations() == 0  # not yet

        clock.shift(1)
        # Expired from the clock already, before anything is recorded.
        assert clerk.get(f"{URL}{reservation['id']}/").json()["status"] == "expired"
        assert sent(manager, subscription, "reservation.expired") == []

        assert expire_reservations() == 1
        assert sent(manager, subscription, "reservation.expired") == ["reservation.expired"]
        assert clerk.get(f"{URL}{reservation['id']}/").json()["status"] == "expired"
        assert widget_of(clerk, widget["id"])["available"] == 5

        assert expire_reservations() == 0
        clock.shift(3600)
        assert expire_reservations() == 0
        assert sent(manager, subscription, "reservation.expired") == ["reservation.expired"]

    def test_an_extended_reservation_is_not_expired(self, clerk, manager, create_widget, clock, subscription):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2), ttl_seconds=60).json()
        clock.shift(30)
        assert act(clerk, reservation["id"], "extend", ttl_seconds=120).status_code == 200

        clock.shift(60)  # past the first time limit, within the second
        assert expire_reservations() == 0
        assert clerk.get(f"{URL}{reservation['id']}/").json()["status"] == "active"
        assert widget_of(clerk, widget["id"])["reserved"] == 2

        clock.shift(90)
        assert expire_reservations() == 1
        assert sent(manager, subscription, "reservation.expired") == ["reservation.expired"]

    def test_committed_and_released_reservations_never_expire(self, clerk, manager, create_widget, clock, subscription):
        widget = create_widget(stock=5)
        committed = reserve(clerk, (widget["id"], 1), ttl_seconds=60).json()
        released = reserve(clerk, (widget["id"], 1), ttl_seconds=60).json()
        assert act(clerk, committed["id"], "commit").status_code == 201
        assert act(clerk, released["id"], "release").status_code == 200

        clock.shift(3600)
        assert expire_reservations() == 0
        assert sent(manager, subscription, "reservation.expired") == []
        assert clerk.get(f"{URL}{committed['id']}/").json()["status"] == "committed"
        assert clerk.get(f"{URL}{released['id']}/").json()["status"] == "released"

    def test_a_recorded_expiry_cannot_be_committed_released_or_extended(self, clerk, create_widget, clock):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 5), ttl_seconds=60).json()
        clock.shift(60)
        assert expire_reservations() == 1

        for verb, body in (("commit", {}), ("release", {}), ("extend", {"ttl_seconds": 60})):
            response = act(clerk, reservation["id"], verb, **body)
            assert response.status_code == 409, verb
            assert response.json()["code"] == "reservation_expired", verb
        assert widget_of(clerk, widget["id"])["stock"] == 5

    def test_the_status_filter_shows_recorded_and_unrecorded_expiries_alike(self, clerk, create_widget, clock):
        widget = create_widget(stock=5)
        first = reserve(clerk, (widget["id"], 1), ttl_seconds=60).json()
        clock.shift(60)
        assert expire_reservations() == 1
        second = reserve(clerk, (widget["id"], 1), ttl_seconds=60).json()
        active = reserve(clerk, (widget["id"], 1), ttl_seconds=600).json()
        clock.shift(60)  # the second has expired too, not yet recorded

        def listed(status):
            return {r["id"] for r in clerk.get(URL, {"status": status}).json()["results"]}

        assert listed("expired") == {first["id"], second["id"]}
        assert listed("active") == {active["id"]}

    def test_limit_records_at_most_that_many_the_oldest_first(self, clerk, create_widget, clock):
        widget = create_widget(stock=5)
        older = reserve(clerk, (widget["id"], 1), ttl_seconds=60).json()
        newer = reserve(clerk, (widget["id"], 1), ttl_seconds=120).json()
        clock.shift(120)

        def recorded():
            entries = clerk.get("/api/changes/", {"object_type": "reservation"}).json()["results"]
            return {e["object_id"] for e in entries if e["action"] == "update"}

        assert expire_reservations("--limit", "1") == 1
        assert recorded() == {older["id"]}
        assert expire_reservations() == 1
        assert recorded() == {older["id"], newer["id"]}

    def test_the_change_log_shows_the_expiry_made_by_no_user(self, clerk, viewer, create_widget, clock):
        widget = create_widget(stock=5)
        reservation = reserve(clerk, (widget["id"], 2), reference="order-77", ttl_seconds=60).json()
        clock.shift(61)
        assert expire_reservations() == 1

        [entry, created] = viewer.get(
            "/api/changes/", {"object_type": "reservation", "object_id": reservation["id"]}
        ).json()["results"]
        assert created["action"] == "create"
        assert (entry["action"], entry["user"], entry["object_repr"]) == ("update", None, "order-77")
        assert entry["changes"] == {"status": ["active", "expired"]}

    def test_many_expiries_are_recorded_in_batches(self, clerk, manager, create_widget, clock, subscription):
        widget = create_widget(stock=500)
        ids = {reserve(clerk, (widget["id"], 1), ttl_seconds=60).json()["id"] for _ in range(130)}
        clock.shift(60)
        assert expire_reservations() == 130  # two transactions of at most 100
        assert len(sent(manager, subscription, "reservation.expired")) == 130
        listed = clerk.get(URL, {"status": "expired", "limit": 200}).json()["results"]
        assert {r["id"] for r in listed} == ids

    @pytest.mark.parametrize("count", [3, 30])
    def test_a_batch_costs_a_fixed_number_of_queries(
        self, clerk, create_widget, clock, subscription, django_assert_max_num_queries, count
    ):
        widgets = [create_widget(stock=100)["id"] for _ in range(3)]
        for n in range(count):
            reserve(clerk, (widgets[n % 3], 1), (widgets[(n + 1) % 3], 1), ttl_seconds=60)
        clock.shift(60)
        # A batch: read, lock the reservations; their items; lock the widgets, sum what they
        # hold; store, take the units off held, log; the subscriptions; events, deliveries,
        # their task. Then an empty batch ends it. Not one query per reservation.
        with django_assert_max_num_queries(16):
            assert expire_reservations() == count


class TestAlerts:
    """An expiry makes its units available again: the alerts it crosses are sent with it."""

    def test_units_held_entirely_by_an_expired_reservation_come_back_in_stock(
        self, clerk, manager, create_widget, clock, subscription
    ):
        widget = create_widget(stock=3)
        reserve(clerk, (widget["id"], 3), ttl_seconds=60)
        assert sent(manager, subscription)[-3:] == ["reservation.created", "widget.low_stock", "widget.out_of_stock"]

        clock.shift(60)
        before = len(sent(manager, subscription))
        assert expire_reservations() == 1
        assert sent(manager, subscription)[before:] == ["reservation.expired", "widget.back_in_stock"]

    def test_an_expiry_that_leaves_the_widget_at_zero_sends_no_back_in_stock(
        self, clerk, manager, create_widget, clock, subscription
    ):
        widget = create_widget(stock=3)
        reserve(clerk, (widget["id"], 2), ttl_seconds=60)
        reserve(clerk, (widget["id"], 1), ttl_seconds=600)
        clock.shift(60)
        assert expire_reservations() == 1
        assert widget_of(clerk, widget["id"])["available"] == 2
        assert sent(manager, subscription, "widget.back_in_stock") == ["widget.back_in_stock"]

        widget = create_widget(stock=2)
        reserve(clerk, (widget["id"], 2), ttl_seconds=600)
        clock.shift(1)
        before = len(sent(manager, subscription, "widget.back_in_stock"))
        assert expire_reservations() == 0
        assert len(sent(manager, subscription, "widget.back_in_stock")) == before

    def test_the_low_stock_alert_is_armed_again_by_an_expiry(self, clerk, manager, create_widget, clock, subscription):
        widget = create_widget(stock=10, reorder_level=5)
        reserve(clerk, (widget["id"], 6), ttl_seconds=60)  # available 4: low
        assert sent(manager, subscription, "widget.low_stock") == ["widget.low_stock"]

        clock.shift(60)
        assert expire_reservations() == 1  # available 10: above again, no alert for that
        assert sent(manager, subscription, "widget.low_stock") == ["widget.low_stock"]
        assert not widget_of(clerk, widget["id"])["low_stock"]

        adjust = f"/api/widgets/{widget['id']}/adjust/"
        assert clerk.post(adjust, {"delta": -6, "reason": "sold"}).status_code == 201  # 4: low again
        assert sent(manager, subscription, "widget.low_stock") == ["widget.low_stock", "widget.low_stock"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_worker_sweep_sends_the_reservation_as_the_api_shows_it(settings, clerk, manager, create_widget, clock):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_RETRY_BASE_DELAY = 0
    widget = create_widget(stock=4)
    with running_receiver() as receiver:
        subscription = subscribe(manager, receiver.url, ["reservation.expired", "widget.back_in_stock"])
        reservation = reserve(clerk, (widget["id"], 4), reference="order-9", ttl_seconds=60).json()
        clock.shift(61)

        run_worker_batch()  # its start-up sweep records the expiry; then it delivers
        payloads = [
            json.loads(json.dumps(Webhook(subscription["secret"]).verify(r["body"], r["headers"])))
            for r in receiver.wait_for(2)
        ]
        run_worker_batch()  # a second worker's sweep finds nothing more to record

    assert len(receiver.requests) == 2
    by_type = {p["type"]: p for p in payloads}
    assert set(by_type) == {"reservation.expired", "widget.back_in_stock"}
    expired = by_type["reservation.expired"]
    assert expired["data"] == clerk.get(f"{URL}{reservation['id']}/").json()
    assert expired["data"]["status"] == "expired"
    assert expired["data"]["closed_at"] is None
    assert by_type["widget.back_in_stock"]["data"]["available"] == 4


def run_worker_batch():
    """``manage.py run_worker --batch``: the start-up sweep, the ready tasks, then stop."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)}
    try:
        call_command("run_worker", batch=True, interval=0, verbosity=0)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@postgres_only
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_sweeps_record_each_expiry_exactly_once(settings, clerk, manager, create_widget, clock):
    """Three sweeps at once (one per instance on Elastic Beanstalk), in small batches, while
    clients sell the same widgets: every expiry recorded once, one event each."""
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    subscription = subscribe(manager, NOWHERE, ["reservation.expired"])
    widgets = [create_widget(stock=1000)["id"] for _ in range(4)]
    ids = set()
    for n in range(60):
        items = [(widgets[n % 4], 1), (widgets[(n + 1) % 4], 2)]  # overlapping widgets
        ids.add(reserve(clerk, *items, reference=f"order-{n}", ttl_seconds=60).json()["id"])
    clock.shift(60)

    barrier, counts, errors = threading.Barrier(4), [], []

    def sweep():
        try:
            barrier.wait(timeout=30)
            counts.append(expire_reservations("--batch-size", "3"))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    def sell():
        api = client_for(clerk.raw_key)
        try:
            barrier.wait(timeout=30)
            for n in range(40):
                response = api.post(f"/api/widgets/{widgets[n % 4]}/adjust/", {"delta": -1, "reason": "sold"})
                if response.status_code != 201:
                    errors.append(response.content)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)] + [threading.Thread(target=sell)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors[:3]

    assert sum(counts) == 60, counts
    assert len(sent(manager, subscription, "reservation.expired")) == 60
    entries = clerk.get("/api/changes/", {"object_type": "reservation", "limit": 500}).json()["results"]
    updates = [e["object_id"] for e in entries if e["action"] == "update"]
    assert sorted(updates) == sorted(ids)
    assert expire_reservations() == 0
    assert {w: widget_of(clerk, w)["stock"] for w in widgets} == dict.fromkeys(widgets, 990)
