"""Writes about events and webhooks: the outbox, and what staff do with subscriptions.

``Outbox`` is used by ``widgets.services`` inside each write's own transaction; the rest is
called by the API, the admin and the commands alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.logs import current_request_id

from .models import Delivery, Event, EventType, WebhookSubscription, new_secret
from .tasks import deliver

# One task carries at most this many deliveries (a batch of 500 adjustments is two tasks).
DELIVERIES_PER_TASK = 250
BULK_BATCH = 1000


class Outbox:
    """The events of one transaction, written with their deliveries by ``flush()``.

    Made inside the transaction of the change. It reads the active subscriptions once
    (one query); an event no active subscription wants is never built nor stored, so a
    write with no subscribers costs that one query. ``flush()`` stores the wanted events,
    a ``Delivery`` per subscription and event, and enqueues their delivery task, all in the
    caller's transaction: if it rolls back, nothing of this exists; once it commits, the
    task is in the database and a worker will run it.
    """

    def __init__(self):
        self.subscriptions = list(WebhookSubscription.objects.active().only("id", "event_types"))
        self.now = timezone.now()
        self.request_id = current_request_id.get()
        self.events: list[tuple[Event, list[WebhookSubscription]]] = []

    def wants(self, event_type: str) -> bool:
        return any(subscription.wants(event_type) for subscription in self.subscriptions)

    def add(
        self,
        event_type: str,
        *,
        object_type: str = "",
        object_id: int | None = None,
        sequence: int | None = None,
        data: Callable[[], dict[str, Any]],
    ) -> None:
        """Record an event; ``data()`` builds its payload, and is called only if it is wanted."""
        subscribers = [s for s in self.subscriptions if s.wants(event_type)]
        if not subscribers:
            return
        event = Event(
            id=uuid.uuid4(),
            type=event_type,
            occurred_at=self.now,
            request_id=self.request_id,
            object_type=object_type,
            object_id=object_id,
            sequence=sequence,
            data=data(),
        )
        self.events.append((event, subscribers))

    def flush(self) -> list[Delivery]:
        if not self.events:
            return []
        Event.objects.bulk_create([event for event, _ in self.events], batch_size=BULK_BATCH)
        retry_until = self.now + timedelta(seconds=settings.WEBHOOK_RETRY_FOR)
        deliveries = Delivery.objects.bulk_create(
            [
                Delivery(
                    subscription_id=subscription.pk,
                    event=event,
                    created_at=self.now,
                    next_attempt_at=self.now,
                    retry_until=retry_until,
                )
                for event, subscribers in self.events
                for subscription in subscribers
            ],
            batch_size=BULK_BATCH,
        )
        _enqueue(deliveries)
        self.events = []
        return deliveries


def _enqueue(deliveries: list[Delivery]) -> None:
    # bulk_create returns primary keys on PostgreSQL and SQLite alike.
    ids = [delivery.pk for delivery in deliveries]
    for start in range(0, len(ids), DELIVERIES_PER_TASK):
        deliver.enqueue(ids[start : start + DELIVERIES_PER_TASK])


# --- Subscriptions --------------------------------------------------------------------------


@transaction.atomic
def create_subscription(*, user=None, **fields: Any) -> WebhookSubscription:
    """A new subscription; its ``secret`` is read once from the returned object."""
    subscription = WebhookSubscription(created_by=user if user and user.is_authenticated else None, **fields)
    subscription.save()
    return subscription


@transaction.atomic
def update_subscription(*, subscription: WebhookSubscription, changes: dict[str, Any]) -> WebhookSubscription:
    """Change a subscription; turning a disabled one back on clears why it was disabled."""
    locked = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    for field, value in changes.items():
        setattr(locked, field, value)
    if changes.get("is_active") is True:
        locked.disabled_at, locked.disabled_reason, locked.failing_since = None, "", None
    locked.save()
    return locked


@transaction.atomic
def delete_subscription(*, subscription: WebhookSubscription) -> None:
    """Delete a subscription with its delivery log; its pending deliveries are not sent."""
    subscription.delete()


@transaction.atomic
def rotate_secret(*, subscription: WebhookSubscription) -> WebhookSubscription:
    """Give the subscription a new signing secret; the old one stops signing at once."""
    locked = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    locked.secret = new_secret()
    locked.save(update_fields=["secret", "updated_at"])
    return locked


@transaction.atomic
def ping(*, subscription: WebhookSubscription) -> Delivery:
    """Send a ``webhook.ping`` event to this one subscription (even a disabled one is tried)."""
    now = timezone.now()
    event = Event.objects.create(
        id=uuid.uuid4(),
        type=EventType.PING,
        occurred_at=now,
        request_id=current_request_id.get(),
        object_type="webhook",
        object_id=subscription.pk,
        data={"subscription": subscription.pk, "url": subscription.url},
    )
    delivery = Delivery.objects.create(
        subscription=subscription,
        event=event,
        created_at=now,
        next_attempt_at=now,
        retry_until=now + timedelta(seconds=settings.WEBHOOK_RETRY_FOR),
    )
    _enqueue([delivery])
    return delivery


class DeliveryInFlight(Exception):
    """A worker is sending this delivery right now."""


@transaction.atomic
def redeliver(*, delivery: Delivery) -> Delivery:
    """Send a delivery again now, with the same ``webhook-id``, and retry it as a new one.

    Raises ``DeliveryInFlight`` while a worker is sending it.
    """
    now = timezone.now()
    locked = Delivery.objects.select_for_update().get(pk=delivery.pk)
    if locked.status == Delivery.Status.PENDING and locked.leased_until and locked.leased_until > now:
        raise DeliveryInFlight()
    locked.status = Delivery.Status.PENDING
    locked.next_attempt_at = now
    locked.retry_until = now + timedelta(seconds=settings.WEBHOOK_RETRY_FOR)
    locked.leased_until = None
    locked.save()
    _enqueue([locked])
    return locked


def enqueue_due(*, grace_seconds: float = 0, limit: int | None = None) -> int:
    """The safety net: enqueue a task for every pending delivery that is due (by at least
    ``grace_seconds``) and that no worker holds; returns how many.

    A committed delivery always has a task, but a worker that dies while sending leaves the
    task marked running; this finds such deliveries once their lease has run out. A delivery
    that also has a task waiting is harmless: a task only sends a delivery that is due and
    not held, so the second task finds nothing to do.
    """
    due = Delivery.objects.due(grace_seconds=grace_seconds).order_by("next_attempt_at", "id")
    ids = list(due.values_list("id", flat=True)[:limit] if limit else due.values_list("id", flat=True))
    for start in range(0, len(ids), DELIVERIES_PER_TASK):
        deliver.enqueue(ids[start : start + DELIVERIES_PER_TASK])
    return len(ids)


def purge(*, older_than: timedelta | None = None) -> dict[str, int]:
    """Delete finished deliveries older than ``older_than`` (default: the configured retention),
    the events no delivery refers to any more, and finished delivery tasks as old.

    Returns how many of each were deleted.
    """
    from django_tasks_db.models import DBTaskResult

    if older_than is None:
        older_than = timedelta(seconds=settings.WEBHOOK_RETENTION)
    before = timezone.now() - older_than
    with transaction.atomic():
        deliveries, _ = Delivery.objects.finished_before(before).delete()
        events, _ = Event.objects.filter(occurred_at__lt=before, deliveries__isnull=True).delete()
        tasks, _ = (
            DBTaskResult.objects.finished()
            .filter(task_path=f"{deliver.func.__module__}.{deliver.func.__name__}", finished_at__lt=before)
            .delete()
        )
    return {"deliveries": deliveries, "events": events, "tasks": tasks}
