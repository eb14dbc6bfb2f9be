"""Writes about events and webhooks: the outbox, and what staff do with subscriptions.

``Outbox`` is used by ``widgets.services`` inside each write's own transaction; the rest is
called by the API, the admin and the commands alike.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import connection, transaction
from django.db.models import sql
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django_tasks.signals import task_enqueued
from django_tasks_db import DatabaseBackend
from django_tasks_db.models import DBTaskResult, get_date_max
from redis.exceptions import RedisError

from config.logs import current_request_id

from .models import ALL_EVENTS, Delivery, Event, EventType, WebhookSubscription, new_secret
from .tasks import deliver

logger = logging.getLogger(__name__)

# One task carries at most this many deliveries (a batch of 500 adjustments is two tasks).
DELIVERIES_PER_TASK = 250
BULK_BATCH = 1000


# --- Who is subscribed (read by every write) ------------------------------------------------

SUBSCRIBERS_KEY = "webhooks-subscribers"
SUBSCRIBERS_VERSION_KEY = "webhooks-subscribers-version"
# A kept list is dropped after this long even if no change was heard of (one could be missed
# while Redis was not answering).
SUBSCRIBERS_SECONDS = 300


class Subscriber(NamedTuple):
    """An active subscription as a write needs it: which events it wants."""

    id: int
    event_types: tuple[str, ...]

    @property
    def pk(self) -> int:
        return self.id

    def wants(self, event_type: str) -> bool:
        return event_type in self.event_types or ALL_EVENTS in self.event_types


def active_subscribers() -> list[Subscriber]:
    """The active subscriptions, which every write reads before it records any event.

    With a shared cache (Redis) the list is kept there with the version it was read under,
    and used while that version is the current one: one Redis round trip instead of a
    database query. Any change to a subscription sets a new version
    (``subscriptions_changed``), so a list read before a change and stored after it is never
    used. Without Redis (or when it does not answer) the database is asked every time.
    """
    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        return _subscribers_from_database()
    try:
        found = cache.get_many([SUBSCRIBERS_VERSION_KEY, SUBSCRIBERS_KEY])
        version, kept = found.get(SUBSCRIBERS_VERSION_KEY), found.get(SUBSCRIBERS_KEY)
        if version is not None and kept is not None and kept[0] == version:
            return kept[1]
        subscribers = _subscribers_from_database()
        if version is None and not cache.add(SUBSCRIBERS_VERSION_KEY, version := secrets.token_hex(8), None):
            return subscribers  # another process has just started a version: let it store its list
        cache.set(SUBSCRIBERS_KEY, (version, subscribers), SUBSCRIBERS_SECONDS)
        return subscribers
    except RedisError:
        return _subscribers_from_database()


def _subscribers_from_database() -> list[Subscriber]:
    rows = WebhookSubscription.objects.active().values_list("id", "event_types")
    return [Subscriber(pk, tuple(event_types)) for pk, event_types in rows]


def subscriptions_changed(**_signal_kwargs) -> None:
    """A subscription was saved or deleted: the kept list of subscribers is out of date.

    Now, and again when the transaction commits: a write that reads the subscriptions in
    between still sees the old rows, and must not keep what it read.
    """
    _new_subscribers_version()
    if connection.in_atomic_block:
        transaction.on_commit(_new_subscribers_version)


def _new_subscribers_version() -> None:
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        try:
            cache.set(SUBSCRIBERS_VERSION_KEY, secrets.token_hex(8), None)
        except RedisError:
            logger.warning("Redis did not answer: writes may use the old subscribers for %s s", SUBSCRIBERS_SECONDS)


# --- The outbox -------------------------------------------------------------------------------


class Outbox:
    """The events of one transaction, written with their deliveries by ``flush()``.

    Made inside the transaction of the change. It reads the active subscriptions once
    (``active_subscribers()``); an event no active subscription wants is never built nor
    stored, so a write with no subscribers costs that one look-up. ``flush()`` stores the
    wanted events, a ``Delivery`` per subscription and event, and enqueues their delivery
    task, all in the caller's transaction: if it rolls back, nothing of this exists; once it
    commits, the task is in the database and a worker will run it.
    """

    def __init__(self):
        self.subscriptions = active_subscribers()
        self.now = timezone.now()
        self.request_id = current_request_id.get()
        self.events: list[tuple[Event, list[Subscriber]]] = []

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

    def flush(self) -> None:
        if not self.events:
            return
        events = [event for event, _ in self.events]
        retry_until = self.now + timedelta(seconds=settings.WEBHOOK_RETRY_FOR)
        deliveries = [
            Delivery(
                subscription_id=subscription.pk,
                event=event,
                created_at=self.now,
                next_attempt_at=self.now,
                retry_until=retry_until,
            )
            for event, subscribers in self.events
            for subscription in subscribers
        ]
        if len(deliveries) <= DELIVERIES_PER_TASK and _one_statement_can_enqueue():
            _insert_and_enqueue(events, deliveries)
        else:
            Event.objects.bulk_create(events, batch_size=BULK_BATCH)
            Delivery.objects.bulk_create(deliveries, batch_size=BULK_BATCH)
            _enqueue(deliveries)
        self.events = []


# The JSON arguments of ``deliver(delivery_ids)`` as ``normalize_json`` would store them, made
# in SQL from the ids the deliveries' INSERT returns.
DELIVERY_IDS_AS_TASK_ARGUMENTS = (
    "SELECT jsonb_build_object('args', jsonb_build_array(jsonb_agg(id ORDER BY id)), 'kwargs', '{}'::jsonb) "
    "FROM deliveries"
)


def _one_statement_can_enqueue() -> bool:
    """On PostgreSQL with the database task backend, the delivery task's row is one more
    INSERT, and can join the statement that stores the events and deliveries."""
    return connection.vendor == "postgresql" and isinstance(deliver.get_backend(), DatabaseBackend)


def _insert_and_enqueue(events: list[Event], deliveries: list[Delivery]) -> None:
    """What ``bulk_create`` of the events and the deliveries and ``deliver.enqueue()`` of the
    deliveries' ids do, in one statement where they make three round trips: the events' and
    the deliveries' INSERTs are CTEs, and the task's row takes its arguments from the ids
    the deliveries' INSERT returns. The row is the one ``DatabaseBackend.enqueue()`` writes
    (django_tasks_db), and its ``task_enqueued`` signal is sent as there. The event ids are
    drawn here; the foreign keys are checked at commit.
    """
    task = DBTaskResult(
        args_kwargs=RawSQL(DELIVERY_IDS_AS_TASK_ARGUMENTS, ()),
        priority=deliver.priority,
        task_path=deliver.module_path,
        queue_name=deliver.queue_name,
        run_after=get_date_max(),  # what the backend stores for "no run_after"
        backend_name=deliver.backend,
    )
    db = transaction.get_connection()  # the connection itself: the proxy costs a look-up per use
    events_sql, events_params = _insert_sql(db, Event, events)
    deliveries_sql, deliveries_params = _insert_sql(db, Delivery, deliveries, returning="id")
    task_sql, task_params = _insert_sql(db, DBTaskResult, [task], returning="args_kwargs")
    with db.cursor() as cursor:
        cursor.execute(
            f"WITH events AS ({events_sql}), deliveries AS ({deliveries_sql}) {task_sql}",
            (*events_params, *deliveries_params, *task_params),
        )
        [(args_kwargs,)] = cursor.fetchall()
    task.args_kwargs = DBTaskResult._meta.get_field("args_kwargs").from_db_value(args_kwargs, None, db)
    task._state.adding = False
    task_enqueued.send(DatabaseBackend, task_result=task.task_result)


def _insert_sql(db, model, objs: list, *, returning: str | None = None) -> tuple[str, tuple]:
    """The INSERT ``bulk_create(objs)`` would run, compiled (a primary key the database draws
    is left out), optionally returning one column."""
    fields = [field for field in model._meta.concrete_fields if not (field.primary_key and field.db_returning)]
    query = sql.InsertQuery(model)
    query.insert_values(fields, objs)
    compiler = query.get_compiler(connection=db)
    compiler.returning_fields = [model._meta.get_field(returning)] if returning else []
    [statement] = compiler.as_sql()
    return statement


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
    """Delete finished deliveries older than ``older_than`` (default: the configured retention)
    and any of a deleted subscription, the events no delivery refers to any more, and finished
    delivery tasks as old.

    Returns how many of each were deleted.
    """
    from django_tasks_db.models import DBTaskResult

    if older_than is None:
        older_than = timedelta(seconds=settings.WEBHOOK_RETENTION)
    before = timezone.now() - older_than
    with transaction.atomic():
        deliveries, _ = Delivery.objects.finished_before(before).delete()
        orphaned, _ = Delivery.objects.orphaned().delete()
        deliveries += orphaned
        events, _ = Event.objects.filter(occurred_at__lt=before, deliveries__isnull=True).delete()
        tasks, _ = (
            DBTaskResult.objects.finished()
            .filter(task_path=f"{deliver.func.__module__}.{deliver.func.__name__}", finished_at__lt=before)
            .delete()
        )
    return {"deliveries": deliveries, "events": events, "tasks": tasks}
