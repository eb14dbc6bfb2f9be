"""Races on PostgreSQL: many requests at once, each thread on its own connection.

SQLite serialises writers, so these only mean something on PostgreSQL, where CI runs them.
"""

import itertools
import random
import threading
import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from widgets import services
from widgets.models import IdempotencyKey, StockMovement, Widget

from .conftest import make_user, postgres_only, token_client

pytestmark = [
    postgres_only,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]  # keeps the roles data migration


def client_for(raw_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw_key}")
    return client


def all_at_once(count, request):
    """Run ``request(i)`` in ``count`` threads released together; return the results in order.

    Each thread gets its own API client and database connection; an exception in a thread
    is returned in its slot, so the test sees it.
    """
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(i):
        try:
            barrier.wait(timeout=30)
            results[i] = request(i)
        except Exception as exc:  # surfaced by the caller's assertions
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a request hung (deadlock?)"
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def test_retry_storm_with_one_key_applies_exactly_once(transactional_db, clerk, create_widget):
    widget = create_widget(stock=100)
    url = f"/api/widgets/{widget['id']}/adjust/"
    body = {"delta": -3, "reason": "sold", "note": "storm"}

    responses = all_at_once(
        20, lambda i: client_for(clerk.raw_key).post(url, body, format="json", headers={"Idempotency-Key": "storm-1"})
    )

    assert {r.status_code for r in responses} <= {201, 409}, [r.content for r in responses]
    originals = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r]
    replays = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" in r]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(originals) == 1
    assert all(r.content == originals[0].content for r in replays)
    assert all(r.json()["code"] == "idempotency_key_in_flight" for r in in_flight)
    assert Widget.objects.get(pk=widget["id"]).stock == 97
    assert StockMovement.objects.filter(widget_id=widget["id"], reason="sold").count() == 1
    stored = IdempotencyKey.objects.get(key="storm-1")
    assert bytes(stored.response_body) == originals[0].content
    after = client_for(clerk.raw_key).post(url, body, format="json", headers={"Idempotency-Key": "storm-1"})
    assert (after.status_code, after["Idempotent-Replayed"], after.content) == (201, "true", originals[0].content)


def test_a_twin_of_a_request_still_in_flight_is_409_and_never_applied(
    transactional_db, clerk, create_widget, monkeypatch
):
    widget = create_widget(stock=10)
    url = f"/api/widgets/{widget['id']}/adjust/"
    body = {"delta": -1, "reason": "sold"}
    headers = {"Idempotency-Key": "slow-1"}
    written, release = threading.Event(), threading.Event()
    real_adjust = services.adjust_stock

    def adjust_then_stall(**kwargs):  # the first request writes, then is held before committing
        movement = real_adjust(**kwargs)
        written.set()
        assert release.wait(timeout=30)
        return movement

    monkeypatch.setattr(services, "adjust_stock", adjust_then_stall)
    first = {}

    def send_first():
        try:
            first["response"] = client_for(clerk.raw_key).post(url, body, format="json", headers=headers)
        finally:
            connection.close()

    thread = threading.Thread(target=send_first)
    thread.start()
    try:
        assert written.wait(timeout=30)
        twin = client_for(clerk.raw_key).post(url, body, format="json", headers=headers)
    finally:
        release.set()
        thread.join(timeout=30)

    assert twin.status_code == 409
    assert twin.json()["code"] == "idempotency_key_in_flight"
    assert first["response"].status_code == 201
    assert Widget.objects.get(pk=widget["id"]).stock == 9
    retry = client_for(clerk.raw_key).post(url, body, format="json", headers=headers)
    assert (retry["Idempotent-Replayed"], retry.content) == ("true", first["response"].content)


def test_overlapping_batches_in_opposite_orders_never_deadlock_or_oversell(
    transactional_db, clerk, manager, create_widget
):
    widgets = [create_widget(stock=30)["id"] for _ in range(6)]
    # Each thread sells from every widget, half of them walking the widgets backwards, and
    # restocks some along the way; repeated to give the races many chances.
    plans = []
    for i in range(8):
        order = widgets if i % 2 == 0 else widgets[::-1]
        items = [{"widget": w, "delta": -2, "reason": "sold"} for w in order]
        items += [
            {"widget": order[0], "delta": 1, "reason": "returned"},
            {"widget": order[-1], "delta": -1, "reason": "sold"},
        ]
        plans.append(items)
    applied = []
    lock = threading.Lock()

    def run_batches(i):
        client = client_for((clerk if i % 2 else manager).raw_key)
        statuses = []
        for _ in range(4):
            response = client.post("/api/adjustments/", {"items": plans[i]}, format="json")
            statuses.append(response.status_code)
            if response.status_code == 201:
                with lock:
                    applied.append(plans[i])
            else:
                assert response.json()["code"] == "insufficient_stock", response.content
        return statuses

    statuses = list(itertools.chain.from_iterable(all_at_once(8, run_batches)))

    assert set(statuses) <= {201, 409}, statuses
    assert 201 in statuses and 409 in statuses  # some batches ran the stock out
    for widget_id in widgets:
        expected = 30 + sum(item["delta"] for plan in applied for item in plan if item["widget"] == widget_id)
        assert Widget.objects.get(pk=widget_id).stock == expected >= 0
    assert not StockMovement.objects.filter(stock_after__lt=0).exists()


def test_concurrent_lost_update_exactly_one_if_match_write_wins(transactional_db, manager, superuser, create_widget):
    widget = create_widget(name="Contended")
    url = f"/api/widgets/{widget['id']}/"
    tags = [manager.get(url)["ETag"], superuser.get(url)["ETag"]]
    assert tags[0] == tags[1]
    keys = [manager.raw_key, superuser.raw_key]

    responses = all_at_once(
        2,
        lambda i: client_for(keys[i]).patch(url, {"name": f"Writer {i}"}, format="json", headers={"If-Match": tags[i]}),
    )

    assert sorted(r.status_code for r in responses) == [200, 412]
    winner = next(r for r in responses if r.status_code == 200)
    loser = next(r for r in responses if r.status_code == 412)
    assert loser["ETag"] == winner["ETag"]
    assert Widget.objects.get(pk=widget["id"]).name == winner.json()["name"]


def test_many_concurrent_if_match_writers_one_wins(transactional_db, manager, create_widget):
    """Every writer passes the early check on the row it read; the row lock decides."""
    widget = create_widget(name="Hot")
    url = f"/api/widgets/{widget['id']}/"
    tag = manager.get(url)["ETag"]

    responses = all_at_once(
        10,
        lambda i: client_for(manager.raw_key).patch(
            url, {"description": str(uuid.uuid4())}, format="json", headers={"If-Match": tag}
        ),
    )

    assert sorted(r.status_code for r in responses) == [200] + [412] * 9
    assert Widget.objects.get(pk=widget["id"]).version == int(tag.strip('"')) + 1


# --- Many clerks adjusting the same few widgets (issue 2) ------------------------------

THREADS = 20
ADJUSTMENTS_PER_THREAD = 10


def test_parallel_adjustments_keep_stock_equal_to_the_ledger(transactional_db):
    creator = token_client(make_user("manager"))
    widget_ids = [
        creator.post("/api/widgets/", {"name": f"Hot {n}", "stock": 5}, format="json").json()["id"] for n in range(3)
    ]
    clients = [token_client(make_user("clerk")) for _ in range(THREADS)]
    statuses, errors = [], []
    start = threading.Barrier(THREADS)

    def worker(client, seed):
        rng = random.Random(seed)
        try:
            start.wait()
            for _ in range(ADJUSTMENTS_PER_THREAD):
                delta = rng.choice([-3, -2, -1, 1, 2])
                response = client.post(
                    f"/api/widgets/{rng.choice(widget_ids)}/adjust/",
                    {"delta": delta, "reason": "sold" if delta < 0 else "received"},
                    format="json",
                )
                statuses.append(response.status_code)
                if response.status_code == 409:
                    assert response.json()["code"] == "insufficient_stock"
        except Exception as exc:  # collected, so the main thread reports it
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(c, n)) for n, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(statuses) == THREADS * ADJUSTMENTS_PER_THREAD
    assert set(statuses) <= {201, 409}
    assert statuses.count(201) > THREADS and statuses.count(409) > 0  # both outcomes exercised
    for widget in Widget.objects.filter(pk__in=widget_ids):
        movements = list(StockMovement.objects.filter(widget=widget).order_by("id"))
        assert widget.stock == sum(m.delta for m in movements) >= 0
        assert all(m.stock_after >= 0 for m in movements)
        assert movements[-1].stock_after == widget.stock
        # Each movement starts from the previous one's result: nothing was lost in between.
        for before, after in zip(movements, movements[1:]):
            assert after.stock_after == before.stock_after + after.delta
    assert StockMovement.objects.filter(widget_id__in=widget_ids).count() == 3 + statuses.count(201)


# --- Reservations (issue 12) -------------------------------------------------------------


def test_twenty_clients_racing_for_the_last_five_units_hold_exactly_five(transactional_db, create_widget):
    widget = create_widget(stock=5)
    keys = [token_client(make_user("clerk")).raw_key for _ in range(20)]
    body = {"reference": "race", "items": [{"widget": widget["id"], "quantity": 1}]}

    responses = all_at_once(20, lambda i: client_for(keys[i]).post("/api/reservations/", body, format="json"))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 5 + [409] * 15, [r.content for r in responses]
    assert all(r.json()["code"] == "insufficient_stock" for r in responses if r.status_code == 409)
    shown = client_for(keys[0]).get(f"/api/widgets/{widget['id']}/").json()
    assert (shown["stock"], shown["reserved"], shown["available"]) == (5, 5, 0)


def test_reservations_racing_adjustments_never_leave_available_below_zero(transactional_db, create_widget):
    widgets = [create_widget(stock=12)["id"] for _ in range(2)]
    keys = [token_client(make_user("clerk")).raw_key for _ in range(12)]
    outcomes = []
    lock = threading.Lock()

    def work(i):
        client, rng = client_for(keys[i]), random.Random(i)
        statuses = []
        for _ in range(6):
            widget_id = rng.choice(widgets)
            if i % 3 == 0:  # sells (and now and then restocks)
                delta = rng.choice([-3, -2, -1, 2])
                response = client.post(
                    f"/api/widgets/{widget_id}/adjust/",
                    {"delta": delta, "reason": "sold" if delta < 0 else "received"},
                    format="json",
                )
            elif i % 3 == 1:  # reserves, then commits or releases some
                response = client.post(
                    "/api/reservations/",
                    {"reference": f"r{i}", "items": [{"widget": widget_id, "quantity": rng.randint(1, 3)}]},
                    format="json",
                )
                if response.status_code == 201 and rng.random() < 0.5:
                    verb = rng.choice(["commit", "release"])
                    follow = client.post(f"/api/reservations/{response.json()['id']}/{verb}/", {}, format="json")
                    statuses.append(follow.status_code)
            else:  # batches over both widgets, in either order
                order = widgets if rng.random() < 0.5 else widgets[::-1]
                response = client.post(
                    "/api/adjustments/",
                    {"items": [{"widget": w, "delta": -1, "reason": "sold"} for w in order]},
                    format="json",
                )
            statuses.append(response.status_code)
            if response.status_code == 409:
                assert response.json()["code"] == "insufficient_stock", response.content
            shown = client.get("/api/widgets/", {"limit": 10}).json()["results"]
            with lock:
                outcomes.extend(w["available"] for w in shown if w["id"] in widgets)
        return statuses

    statuses = list(itertools.chain.from_iterable(all_at_once(12, work)))

    assert set(statuses) <= {200, 201, 409}, statuses
    assert 409 in statuses and 201 in statuses
    assert min(outcomes) >= 0
    for widget in Widget.objects.with_availability().filter(pk__in=widgets):
        assert 0 <= widget.reserved <= widget.stock


def test_multi_item_reservations_in_opposite_orders_never_deadlock(transactional_db, create_widget):
    widgets = [create_widget(stock=40)["id"] for _ in range(6)]
    keys = [token_client(make_user("clerk")).raw_key for _ in range(8)]

    def work(i):
        client = client_for(keys[i])
        order = widgets if i % 2 == 0 else widgets[::-1]
        statuses = []
        for round_ in range(4):
            response = client.post(
                "/api/reservations/",
                {"reference": f"t{i}-{round_}", "items": [{"widget": w, "quantity": 1} for w in order]},
                format="json",
            )
            statuses.append(response.status_code)
            if response.status_code == 201:
                # Commit, release or extend it while the others reserve: all lock the same rows.
                verb, body = [("commit", {}), ("release", {}), ("extend", {"ttl_seconds": 600})][(i + round_) % 3]
                statuses.append(
                    client.post(f"/api/reservations/{response.json()['id']}/{verb}/", body, format="json").status_code
                )
        return statuses

    statuses = list(itertools.chain.from_iterable(all_at_once(8, work)))

    assert set(statuses) <= {200, 201}, statuses  # no deadlock (a 503), no conflict: 40 units suffice
    committed = sum(1 for i in range(8) for r in range(4) if (i + r) % 3 == 0)
    for widget in Widget.objects.with_availability().filter(pk__in=widgets):
        assert widget.stock == 40 - committed
        assert 0 <= widget.reserved <= widget.stock
