"""The one-statement writes on PostgreSQL (docs/performance.md) answer exactly as the
locked path does: the same HTTP answer, stock, ledger and events, whichever path decides.

Each scenario runs twice on fresh widgets, with ``services.FAST_WRITES`` on and off, and
the two runs are compared with ids and times replaced by their order of appearance.
"""

import random
import re
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from webhooks import services as webhook_services
from webhooks.models import Event
from widgets import services
from widgets.models import ChangeLogEntry, Reservation, StockMovement, Widget

from .conftest import make_user, postgres_only, token_client
from .test_concurrency import all_at_once, client_for

pytestmark = postgres_only


class Paths:
    """Counts how often the locked path of the writes named answered (adjustments and
    batches by default)."""

    def __init__(self, monkeypatch, names=("_adjust_stock_locked", "_adjust_stock_batch_locked")):
        self.locked = self.locked_ok = 0
        self.lock = threading.Lock()
        for name in names:
            original = getattr(services, name)

            def counted(*args, _original=original, **kwargs):
                with self.lock:
                    self.locked += 1
                result = _original(*args, **kwargs)
                with self.lock:
                    self.locked_ok += 1
                return result

            monkeypatch.setattr(services, name, counted)


@pytest.fixture
def paths(monkeypatch):
    return Paths(monkeypatch)


@pytest.fixture
def reservation_paths(monkeypatch):
    return Paths(monkeypatch, ("_create_reservation_locked", "_commit_reservation_locked"))


@pytest.fixture
def subscribed(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    webhook_services.create_subscription(url="http://127.0.0.1:9/hook", event_types=["*"])


def normalised(value, names):
    """``value`` with times, and the ids of the movements and reservations it made (the
    sequences of a rolled back run are not rolled back), replaced by placeholders."""
    if isinstance(value, dict):
        kind = "movement" if "delta" in value else "reservation" if "reference" in value else None
        return {
            key: "<time>"
            if key in TIMES and item is not None
            else placeholder(names, kind, item)
            if key == "id" and kind
            else normalised(item, names)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [normalised(item, names) for item in value]
    if isinstance(value, str):  # "Reservation 12 expired at 2026-...", in messages and notes
        value = RESERVATION.sub(lambda match: f"Reservation {placeholder(names, 'reservation', int(match[1]))}", value)
        return TIME.sub("<time>", value)
    return value


def placeholder(names, kind, value):
    return names.setdefault((kind, value), f"<{len(names)}>")


RESERVATION = re.compile(r"Reservation (\d+)")
TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)")


TIMES = {"created_at", "updated_at", "closed_at", "expires_at"}


class Rollback(Exception):
    pass


def run(monkeypatch, fast, clerk, widgets, scenario):
    """Run ``scenario(clerk, widgets)`` and roll it back; return everything it produced."""
    monkeypatch.setattr(services, "FAST_WRITES", fast)
    try:
        with transaction.atomic():
            answers = [(r.status_code, r.get("ETag"), r.json()) for r in scenario(clerk, widgets)]
            state = list(
                Widget.objects.with_availability()
                .filter(pk__in=widgets)
                .order_by("pk")
                .values("pk", "stock", "reserved", "held", "version")
            )
            ledger = list(
                StockMovement.objects.filter(widget__in=widgets)
                .order_by("id")
                .values("widget", "delta", "reason", "note", "stock_after", "created_by")
            )
            events = sorted(  # one write's events share their time: order them by widget, version, type
                Event.objects.filter(object_id__in=widgets, object_type="widget")
                .exclude(type="widget.created")
                .values_list("object_id", "sequence", "type", "data"),
                key=lambda event: event[:3],
            )
            # Everything here was made by this run (it is rolled back): its reservations'
            # events and change log, in the order written.
            reservation_events = list(
                Event.objects.filter(object_type="reservation")
                .order_by("occurred_at", "object_id")
                .values_list("type", "data")
            )
            reservation_log = list(
                ChangeLogEntry.objects.filter(object_type="reservation")
                .order_by("id")
                .values("action", "object_repr", "changes", "user")
            )
            raise Rollback()
    except Rollback:
        pass
    return normalised(
        {
            "answers": answers,
            "state": state,
            "ledger": ledger,
            "events": events,
            "reservation_events": reservation_events,
            "reservation_log": reservation_log,
        },
        {},
    )


def same_either_way(monkeypatch, clerk, create_widget, scenario):
    widgets = [create_widget(stock=stock, reorder_level=5)["id"] for stock in (10, 3, 0)]
    fast = run(monkeypatch, True, clerk, widgets, scenario)
    locked = run(monkeypatch, False, clerk, widgets, scenario)
    assert fast == locked
    return fast


def adjust(client, widget_id, delta, reason=None, **headers):
    reason = reason or ("received" if delta > 0 else "sold")
    return client.post(
        f"/api/widgets/{widget_id}/adjust/",
        {"delta": delta, "reason": reason, "note": "n"},
        format="json",
        headers=headers,
    )


def batch(client, *items):
    return client.post(
        "/api/adjustments/",
        {"items": [{"widget": w, "delta": d, "reason": "received" if d > 0 else "sold"} for w, d in items]},
        format="json",
    )


def reserve(client, widget_id, quantity):
    response = client.post(
        "/api/reservations/", {"reference": "r", "items": [{"widget": widget_id, "quantity": quantity}]}, format="json"
    )
    assert response.status_code == 201, response.content
    return response


def expire(reservation_response):
    past = timezone.now() - timedelta(seconds=1)
    Reservation.objects.filter(pk=reservation_response.json()["id"]).update(
        created_at=past - timedelta(minutes=1), expires_at=past
    )


class TestAdjust:
    def test_sales_receipts_and_crossings_answer_alike(self, monkeypatch, clerk, create_widget, subscribed, paths):
        def scenario(client, w):
            # low stock (10 -> 5), out of stock (3 -> 0), back in stock (0 -> 4), plain moves
            yield adjust(client, w[0], -5)
            yield adjust(client, w[1], -3)
            yield adjust(client, w[2], 4)
            yield adjust(client, w[0], 2)
            yield adjust(client, w[0], -1, "damaged")
            yield adjust(client, w[1], 1, "correction")

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert paths.locked == 6  # only the run with the switch off locked
        types = [event[2] for event in result["events"]]
        assert {"widget.low_stock", "widget.out_of_stock", "widget.back_in_stock"} <= set(types)
        assert types.count("stock.adjusted") == 2 + 6  # two widgets' initial stock, six adjustments

    def test_refusals_answer_alike_through_the_locked_path(self, monkeypatch, clerk, create_widget, paths):
        def scenario(client, w):
            yield adjust(client, w[1], -4)  # 3 in stock: 409
            yield adjust(client, w[0], services.MAX_STOCK)  # over the maximum: 409
            yield adjust(client, 10**9, -1)  # no such widget: 404
            yield adjust(client, w[1], -3)

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert [status for status, _, _ in result["answers"]] == [409, 409, 404, 201]
        assert paths.locked == 4 + 3  # the run with it off, and each refusal of the fast one

    def test_reserved_units_are_held_back_alike(self, monkeypatch, clerk, create_widget, subscribed, paths):
        def scenario(client, w):
            reserve(client, w[0], 4)
            yield adjust(client, w[0], -7)  # 6 available: 409 with available 6
            yield adjust(client, w[0], -6)  # all that is available; crosses to 0 available
            yield adjust(client, w[0], 1)
            yield adjust(client, w[0], -2)  # 1 available: 409

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert [status for status, _, _ in result["answers"]] == [409, 201, 201, 409]
        assert result["answers"][0][2]["available"] == 6
        assert result["state"][0]["reserved"] == result["state"][0]["held"] == 4
        assert paths.locked == 4 + 2

    def test_units_of_an_expired_hold_can_be_sold_through_the_locked_path(
        self, monkeypatch, clerk, create_widget, paths
    ):
        def scenario(client, w):
            expire(reserve(client, w[0], 8))  # held 8 until recorded, reserved 0 by the clock
            yield adjust(client, w[0], -9)

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert result["answers"][0][0] == 201
        assert (result["state"][0]["stock"], result["state"][0]["reserved"], result["state"][0]["held"]) == (1, 0, 8)
        assert paths.locked == 2

    def test_an_idempotent_replay_answers_alike(self, monkeypatch, clerk, create_widget, paths):
        def scenario(client, w):
            yield adjust(client, w[0], -2, Idempotency_Key="k1")
            yield adjust(client, w[0], -2, Idempotency_Key="k1")

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert result["answers"][0] == result["answers"][1]
        assert len(result["ledger"]) == 3  # two widgets' initial stock and one sale
        assert paths.locked == 1


class TestBatch:
    def test_a_batch_answers_alike(self, monkeypatch, clerk, create_widget, subscribed, paths):
        def scenario(client, w):
            reserve(client, w[1], 1)
            yield batch(client, (w[0], 3), (w[1], -2), (w[0], -8), (w[2], 2), (w[0], 1))

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert result["answers"][0][0] == 201
        assert [m["stock_after"] for m in result["answers"][0][2]["movements"]] == [13, 1, 5, 2, 6]
        assert paths.locked == 1

    @pytest.mark.parametrize(
        "items, status",
        [
            ([(0, 3), (1, -3), (0, -20)], 409),  # the third item takes more than there is
            ([(0, -11), (0, 20)], 409),  # each item is checked in order, not only the net
            ([(0, 1), (None, -1)], 400),  # no such widget
            ([(0, 2), (1, services.MAX_STOCK)], 409),
        ],
    )
    def test_a_refused_batch_answers_alike_and_applies_nothing(
        self, monkeypatch, clerk, create_widget, paths, items, status
    ):
        def scenario(client, w):
            reserve(client, w[1], 1)
            yield batch(client, *[(w[i] if i is not None else 10**9, d) for i, d in items])

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert result["answers"][0][0] == status
        assert [row["stock"] for row in result["state"]] == [10, 3, 0]
        assert paths.locked == 2


def hold(client, *items, reference="order-1"):
    return client.post(
        "/api/reservations/",
        {"reference": reference, "items": [{"widget": w, "quantity": q} for w, q in items]},
        format="json",
    )


def commit(client, reservation_id):
    return client.post(f"/api/reservations/{reservation_id}/commit/", {}, format="json")


class TestReservations:
    def test_reservations_made_and_committed_answer_alike(
        self, monkeypatch, clerk, create_widget, subscribed, reservation_paths
    ):
        def scenario(client, w):
            # w0 10 -> 4 available (low), w1 3 -> 0 available (out of stock)
            made = hold(client, (w[0], 6), (w[1], 3))
            yield made
            yield client.get(f"/api/widgets/{w[0]}/")
            yield commit(client, made.json()["id"])
            yield client.get(f"/api/widgets/{w[1]}/")
            again = hold(client, (w[0], 4), reference="order-2")
            yield again
            yield commit(client, again.json()["id"])

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert [status for status, _, _ in result["answers"]] == [201, 200, 201, 200, 201, 201]
        assert [row["stock"] for row in result["state"]] == [0, 0, 0]
        assert [m["stock_after"] for m in result["answers"][2][2]["movements"]] == [4, 0]
        assert [event[0] for event in result["reservation_events"]] == [
            "reservation.created",
            "reservation.committed",
            "reservation.created",
            "reservation.committed",
        ]
        assert [entry["action"] for entry in result["reservation_log"]] == ["create", "update"] * 2
        assert {"widget.low_stock", "widget.out_of_stock"} <= {event[2] for event in result["events"]}
        assert reservation_paths.locked == 4  # only the run with the switch off locked

    def test_refused_reservations_answer_alike_through_the_locked_path(
        self, monkeypatch, clerk, create_widget, reservation_paths
    ):
        def scenario(client, w):
            yield hold(client, (w[0], 2), (w[1], 4))  # 3 in stock: 409 naming item 1
            yield hold(client, (w[0], 2), (10**9, 1))  # no such widget: 400
            yield hold(client, (w[2], 1))  # nothing in stock: 409

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert [status for status, _, _ in result["answers"]] == [409, 400, 409]
        assert result["answers"][0][2]["index"] == 1
        assert [row["held"] for row in result["state"]] == [0, 0, 0]
        assert result["reservation_events"] == result["reservation_log"] == []
        assert reservation_paths.locked == 3 + 3  # the run with it off, and each refusal of the fast one

    def test_units_of_an_expired_hold_can_be_reserved_through_the_locked_path(
        self, monkeypatch, clerk, create_widget, reservation_paths
    ):
        def scenario(client, w):
            expire(reserve(client, w[0], 8))  # held 8 until recorded, reserved 0 by the clock
            yield hold(client, (w[0], 9))

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert result["answers"][0][0] == 201
        assert (result["state"][0]["reserved"], result["state"][0]["held"]) == (9, 17)
        assert reservation_paths.locked == 2 + 1  # the run with it off, and the fast one refused by held

    def test_commits_that_cannot_be_made_answer_alike(self, monkeypatch, clerk, create_widget, reservation_paths):
        def scenario(client, w):
            released = reserve(client, w[0], 1).json()["id"]
            client.post(f"/api/reservations/{released}/release/", {}, format="json")
            yield commit(client, released)  # 409 not active
            expired = reserve(client, w[0], 1)
            expire(expired)
            yield commit(client, expired.json()["id"])  # 409 expired
            yield commit(client, 10**9)  # 404
            twice = reserve(client, w[1], 2).json()["id"]
            yield commit(client, twice)
            yield commit(client, twice)  # 409 not active

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert [status for status, _, _ in result["answers"]] == [409, 409, 404, 201, 409]
        assert [answer[2].get("code") for answer in result["answers"]] == [
            "reservation_not_active",
            "reservation_expired",
            "not_found",
            None,
            "reservation_not_active",
        ]
        assert [row["stock"] for row in result["state"]] == [10, 1, 0]

    def test_a_commit_after_an_expired_hold_was_sold_answers_alike_through_the_locked_path(
        self, monkeypatch, clerk, create_widget, reservation_paths
    ):
        def scenario(client, w):
            kept = reserve(client, w[0], 4).json()["id"]
            expire(reserve(client, w[0], 5))
            yield adjust(client, w[0], -6)  # sells 5 units the expired hold still counts in held
            yield commit(client, kept)  # stock 4 < held 9: the fast commit refuses, the locked one sells

        result = same_either_way(monkeypatch, clerk, create_widget, scenario)
        assert [status for status, _, _ in result["answers"]] == [201, 201]
        assert (result["state"][0]["stock"], result["state"][0]["held"]) == (0, 5)
        assert reservation_paths.locked == 3 + 1  # the run with it off, and the fast commit refused


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_twenty_threads_racing_decreases_against_reservations_and_commits_never_oversell(
    transactional_db, create_widget, paths
):
    widgets = [create_widget(stock=30)["id"] for _ in range(2)]
    keys = [token_client(make_user("clerk")).raw_key for _ in range(20)]
    outcomes, lock = [], threading.Lock()

    def work(i):
        client, rng = client_for(keys[i]), random.Random(i)
        statuses = []
        for _ in range(5):
            widget_id = rng.choice(widgets)
            if i % 2:
                response = adjust(client, widget_id, -rng.randint(1, 4))
                kind = "adjust"
            elif i % 4 == 0:
                response = client.post(
                    "/api/reservations/",
                    {"reference": f"r{i}", "items": [{"widget": widget_id, "quantity": rng.randint(1, 3)}]},
                    format="json",
                )
                if response.status_code == 201:
                    then = rng.choice(["release", "commit", "keep"])
                    if then != "keep":
                        closed = client.post(f"/api/reservations/{response.json()['id']}/{then}/", {}, format="json")
                        statuses.append((then, closed.status_code))
                kind = "reserve"
            else:
                response = batch(client, *[(w, -1) for w in widgets])
                kind = "adjust"
            statuses.append((kind, response.status_code))
            shown = client.get("/api/widgets/", {"limit": 10}).json()["results"]
            with lock:
                outcomes.extend(w["available"] for w in shown if w["id"] in widgets)
        return statuses

    statuses = [s for result in all_at_once(20, work) for s in result]

    assert {status for _, status in statuses} <= {200, 201, 409}, statuses
    assert ("adjust", 409) in statuses and ("reserve", 201) in statuses
    assert {("release", 200), ("commit", 201)} >= {s for s in statuses if s[0] in ("release", "commit")}
    assert min(outcomes) >= 0
    # Most decreases that succeeded did so in one statement; the refused ones were locked.
    assert statuses.count(("adjust", 201)) > 2 * paths.locked_ok
    for widget in Widget.objects.with_availability().filter(pk__in=widgets):
        assert 0 <= widget.reserved <= widget.held <= widget.stock


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_commit_waiting_on_a_sale_that_saw_its_hold_expire_does_not_sell_the_units_again(
    transactional_db, create_widget, reservation_paths
):
    """The fast commit reads the clock before its statement, then waits for the widget's row
    lock. A sale holding that lock reads a later clock, finds the reservation expired and
    sells its units. The commit must then not sell them again: it falls back to the locked
    path, which reads the clock after the locks and answers 409 expired."""
    widget = create_widget(stock=10)["id"]
    clerk = client_for(token_client(make_user("clerk")).raw_key)
    reservation = reserve(clerk, widget, 4).json()["id"]
    expires_at = timezone.now() + timedelta(seconds=1.5)
    Reservation.objects.filter(pk=reservation).update(expires_at=expires_at)
    locked, commit_sent = threading.Event(), threading.Event()
    answers = {}

    def sell_everything_once_expired():
        try:
            with transaction.atomic():
                Widget.objects.select_for_update().get(pk=widget)  # the sale holds the row lock
                locked.set()
                commit_sent.wait(10)
                time.sleep(max(0.0, (expires_at - timezone.now()).total_seconds()) + 0.2)
                answers["sale"] = services.adjust_stock(widget_id=widget, delta=-10, reason="sold").stock_after
        finally:
            connection.close()

    def commit_before_expiry():
        try:
            answers["commit"] = commit(clerk, reservation)
        except Exception as exc:  # selling the units twice breaks the stock >= 0 constraint
            answers["commit"] = exc
        finally:
            connection.close()

    sale = threading.Thread(target=sell_everything_once_expired)
    sale.start()
    assert locked.wait(10)
    committer = threading.Thread(target=commit_before_expiry)
    committer.start()
    time.sleep(0.3)  # the commit's statement is now waiting for the widget's lock
    assert timezone.now() < expires_at, "too slow to start the commit before the expiry"
    commit_sent.set()
    sale.join(30)
    committer.join(30)

    assert answers["sale"] == 0  # 10 in stock, the 4 held no longer by the clock: all sold
    assert not isinstance(answers["commit"], Exception), answers["commit"]
    assert answers["commit"].status_code == 409, answers["commit"].content
    assert answers["commit"].json()["code"] == "reservation_expired"
    assert reservation_paths.locked == 1  # the fast commit refused, the locked one explained
    sold = Widget.objects.with_availability().get(pk=widget)
    assert (sold.stock, sold.reserved, sold.held) == (0, 0, 4)  # held until the sweep records the expiry
