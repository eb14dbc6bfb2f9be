"""Webhook delivery under concurrency and crashes, on PostgreSQL with real worker processes
(``manage.py run_worker``) and a real receiver on the loopback."""

import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from standardwebhooks import Webhook

from webhooks.models import Delivery, WebhookSubscription

from .conftest import postgres_only
from .test_concurrency import client_for
from .webhook_receiver import running_receiver

pytestmark = [postgres_only, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def receiver(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    with running_receiver() as receiver:
        yield receiver


def worker(*args) -> subprocess.Popen:
    """A worker process on the test database, as the Procfile starts one."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "1",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "test-worker"),
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_worker", "--interval", "0.2", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def subscribe(manager, url, event_types):
    response = manager.post("/api/webhooks/", {"url": url, "event_types": event_types}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_1000_adjustments_from_8_clients_are_1000_deliveries_none_lost_none_twice(
    manager, clerk, create_widget, receiver
):
    widgets = [create_widget(stock=100_000)["id"] for _ in range(4)]
    subscription = subscribe(manager, receiver.url, ["stock.adjusted"])
    barrier, errors = threading.Barrier(8), []

    def client(n):
        api, rng = client_for(clerk.raw_key), random.Random(n)
        try:
            barrier.wait(timeout=30)
            for _ in range(125):
                response = api.post(f"/api/widgets/{rng.choice(widgets)}/adjust/", {"delta": -1, "reason": "sold"})
                if response.status_code != 201:
                    errors.append(response.content)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors[:3]

    # Two workers at once: each task, and each delivery, is taken by one of them only.
    workers = [worker("--batch"), worker("--batch")]
    for process in workers:
        finish(process)

    requests = receiver.wait_for(1000)
    time.sleep(0.5)  # nothing more arrives
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(ids) == len(set(ids)) == 1000
    payloads = [Webhook(subscription["secret"]).verify(r["body"], r["headers"]) for r in requests]
    assert {p["type"] for p in payloads} == {"stock.adjusted"}
    assert len({p["data"]["movement"]["id"] for p in payloads}) == 1000
    assert Delivery.objects.filter(status="delivered", attempts=1).count() == 1000


def test_a_worker_killed_mid_delivery_delivers_after_restart_with_the_same_webhook_id(manager, create_widget, receiver):
    subscription = subscribe(manager, receiver.url, ["widget.created"])
    create_widget()
    receiver.hanging = True  # take the request, never answer

    running = worker()
    try:
        [first] = receiver.wait_for(1, timeout=60)
    finally:
        running.send_signal(signal.SIGKILL)
        running.communicate(timeout=30)
    receiver.hanging = False
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.leased_until > timezone.now()
    # The dead worker's hold on it runs out WEBHOOK_LEASE_SECONDS (30 s) later: end it now
    # rather than wait. A live worker would still be within its 10 s request timeout.
    Delivery.objects.filter(pk=delivery.pk).update(leased_until=timezone.now())

    finish(worker("--batch"))  # a restart: its start-up sweep finds the delivery again

    first_again, second = receiver.wait_for(2)
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert Webhook(subscription["secret"]).verify(second["body"], second["headers"])["type"] == "widget.created"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)


def test_a_running_workers_sweep_records_expiries_and_sends_reservation_expired(
    manager, clerk, create_widget, receiver, time_machine
):
    """The worker's periodic sweep (not only its start-up one) records an expiry: the
    reservation expires while the worker runs, and is sent within ``--sweep-every``."""
    subscription = subscribe(manager, receiver.url, ["widget.created", "reservation.expired"])
    running = worker("--sweep-every", "0.5")
    try:
        create_widget(name="started")
        receiver.wait_for(1, timeout=60)  # the worker is up, its start-up sweep behind it
        widget = create_widget(stock=3)
        # Made two days ago with a 60 s limit: expired by the real clock the worker reads.
        time_machine.move_to(timezone.now() - timedelta(days=2), tick=False)
        response = clerk.post(
            "/api/reservations/",
            {"reference": "order-late", "ttl_seconds": 60, "items": [{"widget": widget["id"], "quantity": 3}]},
            format="json",
        )
        assert response.status_code == 201, response.content
        time_machine.move_to(timezone.now() + timedelta(days=2), tick=True)
        requests = receiver.wait_for(3, timeout=60)
        time.sleep(1.5)  # three more sweeps while the worker runs: nothing more is sent
        assert len(receiver.requests) == 3
    finally:
        running.send_signal(signal.SIGTERM)
        running.communicate(timeout=60)
    payloads = [Webhook(subscription["secret"]).verify(r["body"], r["headers"]) for r in requests]
    assert [p["type"] for p in payloads] == ["widget.created", "widget.created", "reservation.expired"]
    assert payloads[2]["data"]["id"] == response.json()["id"]
    assert payloads[2]["data"]["status"] == "expired"


def test_a_subscription_deleted_while_a_write_is_under_way_does_not_fail_the_write(
    manager, clerk, create_widget, receiver
):
    widget = create_widget(stock=10)
    subscription = subscribe(manager, receiver.url, ["*"])
    deleted, release = threading.Event(), threading.Event()

    def delete_and_commit_later():
        try:
            with transaction.atomic():
                WebhookSubscription.objects.filter(pk=subscription["id"]).delete()
                deleted.set()
                release.wait(10)
        finally:
            connection.close()

    deleting = threading.Thread(target=delete_and_commit_later)
    deleting.start()
    assert deleted.wait(10)
    # The write still sees the subscription (its delete has not committed) and records a
    # delivery for it; the delete commits before the write does.
    threading.Timer(0.3, release.set).start()
    response = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -1, "reason": "sold"}, format="json")
    deleting.join()

    assert response.status_code == 201, response.content
    assert manager.get(f"/api/widgets/{widget['id']}/").json()["stock"] == 9
    assert manager.get(f"/api/webhooks/{subscription['id']}/").status_code == 404
    # What was recorded for the deleted subscription is never sent, and purge removes it.
    out = io.StringIO()
    finish(worker("--batch"))
    assert receiver.requests == []
    call_command("purge_webhook_deliveries", stdout=out)
    assert out.getvalue().startswith("Deleted 1 delivery(ies)")
    assert not Delivery.objects.exists()
