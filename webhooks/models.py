"""
Events (the transactional outbox), webhook subscriptions and their deliveries.

An ``Event`` and its ``Delivery`` rows are written by ``widgets.services`` in the same
transaction as the change that caused them, so a change that rolls back leaves none and a
change that commits always has them; the delivery task is enqueued in that transaction too
(django-tasks-db stores it in the same database). A worker then sends each delivery.
"""

import base64
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .addresses import validate_webhook_url


class EventType(models.TextChoices):
    WIDGET_CREATED = "widget.created"
    WIDGET_UPDATED = "widget.updated"
    WIDGET_DELETED = "widget.deleted"
    CATEGORY_CREATED = "category.created"
    CATEGORY_UPDATED = "category.updated"
    CATEGORY_DELETED = "category.deleted"
    STOCK_ADJUSTED = "stock.adjusted"
    WIDGET_LOW_STOCK = "widget.low_stock"
    WIDGET_OUT_OF_STOCK = "widget.out_of_stock"
    WIDGET_BACK_IN_STOCK = "widget.back_in_stock"
    # Reservations (issue 12): emitted by the reservation services once they exist.
    RESERVATION_CREATED = "reservation.created"
    RESERVATION_COMMITTED = "reservation.committed"
    RESERVATION_RELEASED = "reservation.released"
    RESERVATION_EXPIRED = "reservation.expired"
    # Sent only by the ping action, to the one subscription it was asked for.
    PING = "webhook.ping"


ALL_EVENTS = "*"
SUBSCRIBABLE_EVENTS = [value for value in EventType.values if value != EventType.PING]


def validate_event_types(value) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ValidationError('A non-empty list of event types, or ["*"] for all of them.', code="invalid")
    if ALL_EVENTS in value:
        if value != [ALL_EVENTS]:
            raise ValidationError('"*" means every event type and stands alone: ["*"].', code="invalid")
        return
    unknown = [item for item in value if item not in SUBSCRIBABLE_EVENTS]
    if unknown:
        raise ValidationError(
            f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(SUBSCRIBABLE_EVENTS)}.",
            code="invalid_choice",
        )
    if len(set(value)) != len(value):
        raise ValidationError("An event type is listed twice.", code="duplicate")


SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class Event(models.Model):
    """Something that happened, as its subscribers receive it (the envelope's fields).

    Stored only when at least one active subscription wants it: the outbox of its deliveries.
    """

    id = models.UUIDField(primary_key=True, editable=False)
    type = models.CharField(max_length=40, choices=EventType.choices)
    occurred_at = models.DateTimeField()
    # Null, not "": no request at all (a command, the worker), as opposed to one without an id.
    request_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    # The widget or category it is about; a plain number, so the event outlives the object.
    object_type = models.CharField(max_length=20, blank=True)
    object_id = models.BigIntegerField(null=True)
    # The object's version after the change: a receiver orders events by it, drops stale ones.
    sequence = models.BigIntegerField(null=True)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [models.Index(fields=["occurred_at"], name="event_occurred")]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"

    def envelope(self) -> dict:
        """The JSON body of a delivery."""
        return {
            "id": str(self.id),
            "type": self.type,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "request_id": self.request_id,
            "sequence": self.sequence,
            "data": self.data,
        }


class WebhookSubscriptionQuerySet(models.QuerySet):
    def active(self):
        return self.filter(is_active=True)


class WebhookSubscription(models.Model):
    url = models.URLField(
        max_length=2000,
        validators=[validate_webhook_url],
        help_text="Where events are POSTed: https, on a public address.",
    )
    event_types = models.JSONField(
        default=list,
        validators=[validate_event_types],
        help_text='The event types to send, or ["*"] for all of them.',
    )
    is_active = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    secret = models.CharField(max_length=100, default=new_secret, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Since when every delivery has failed (None: the last one succeeded, or none failed yet).
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=500, blank=True, editable=False)

    objects = WebhookSubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        verbose_name = "webhook subscription"

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return event_type in self.event_types or ALL_EVENTS in self.event_types


class DeliveryQuerySet(models.QuerySet):
    def due(self, *, now=None, grace_seconds: float = 0):
        """Pending deliveries whose next attempt is due (by ``grace_seconds`` at least), that
        no worker holds now, and whose subscription still exists."""
        now = now or timezone.now()
        return self.filter(
            Q(leased_until__isnull=True) | Q(leased_until__lte=now),
            Exists(WebhookSubscription.objects.filter(pk=OuterRef("subscription_id"))),
            status=Delivery.Status.PENDING,
            next_attempt_at__lte=now - timezone.timedelta(seconds=grace_seconds),
        )

    def orphaned(self):
        """Deliveries of a subscription deleted while their write was under way."""
        return self.filter(~Exists(WebhookSubscription.objects.filter(pk=OuterRef("subscription_id"))))

    def finished_before(self, when):
        return self.filter(status__in=[Delivery.Status.DELIVERED, Delivery.Status.FAILED], created_at__lt=when)


RESPONSE_EXCERPT_BYTES = 1024


class Delivery(models.Model):
    """One event sent (or to be sent) to one subscription, and how its attempts went."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    # No database constraint: a write that read the subscriptions just before one was deleted
    # records a delivery for it, and must still commit (its stock change is what matters).
    # Such a delivery is never due and ``purge`` deletes it. Deleting a subscription deletes
    # its deliveries (Django's cascade). Indexed by ``delivery_newest``.
    subscription = models.ForeignKey(
        WebhookSubscription,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_constraint=False,
        db_index=False,
    )
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Retried until then; afterwards a failing delivery is marked failed.
    retry_until = models.DateTimeField()
    # Set by the worker sending it: no other worker takes it over before then.
    leased_until = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
            models.Index(fields=["subscription", "-created_at", "-id"], name="delivery_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.subscription_id} ({self.status})"
