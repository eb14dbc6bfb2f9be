"""The events we POST to subscribers, described in the OpenAPI document (drf-spectacular's
webhooks). Our document is OpenAPI 3.0, which has no ``webhooks`` section (3.1 added it), so
``x_webhooks`` files them under ``x-webhooks``, which ReDoc shows as it would 3.1's."""

from drf_spectacular.utils import OpenApiResponse, OpenApiWebhook, extend_schema
from rest_framework import serializers

from .models import EventType

SIGNED = (
    "Sent as a JSON `POST` to the subscription's URL, signed as the Standard Webhooks "
    "specification says: headers `webhook-id` (the event id; the same on every retry), "
    "`webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of "
    "`{webhook-id}.{webhook-timestamp}.{body}` keyed with the base64-decoded part of the secret "
    "after `whsec_`). Answer 2xx within 10 seconds; anything else is retried with exponential "
    "backoff for about 24 hours. At least once: deduplicate on `webhook-id`, order by `sequence`. "
    "See docs/events.md."
)


def envelope(name: str, types: list[str], data) -> type[serializers.Serializer]:
    """An event body: the envelope around ``data``."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "id": serializers.UUIDField(help_text="The event id, also sent as `webhook-id`."),
            "type": serializers.ChoiceField(choices=types),
            "occurred_at": serializers.DateTimeField(),
            "request_id": serializers.CharField(
                allow_null=True, help_text="The X-Request-ID of the API request that caused it (null otherwise)."
            ),
            "sequence": serializers.IntegerField(
                allow_null=True,
                help_text="The object's version after the change: a higher one is newer. "
                "Events of one transaction share it.",
            ),
            "data": data,
            "__doc__": f"The body of a {', '.join(types)} delivery.",
        },
    )


class WidgetEventData(serializers.Serializer):
    """The widget as the API shows it (without `url`), after the change."""

    id = serializers.IntegerField()
    sku = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    category = serializers.IntegerField(allow_null=True)
    price = serializers.DecimalField(max_digits=12, decimal_places=2)
    stock = serializers.IntegerField()
    reserved = serializers.IntegerField(help_text="Units held by active reservations.")
    available = serializers.IntegerField(help_text="stock - reserved.")
    reorder_level = serializers.IntegerField()
    low_stock = serializers.BooleanField()
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class CategoryEventData(serializers.Serializer):
    """The category as the API shows it (without `url`)."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    description = serializers.CharField()


class MovementEventData(serializers.Serializer):
    id = serializers.IntegerField()
    widget = serializers.IntegerField()
    delta = serializers.IntegerField()
    reason = serializers.CharField()
    note = serializers.CharField()
    stock_after = serializers.IntegerField()
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()


class StockAdjustedData(serializers.Serializer):
    """One movement of the ledger and the widget with the stock it left."""

    movement = MovementEventData()
    widget = WidgetEventData()


class ReservationItemEventData(serializers.Serializer):
    widget = serializers.IntegerField()
    quantity = serializers.IntegerField()


class ReservationEventData(serializers.Serializer):
    """The reservation as the API shows it, after the change."""

    id = serializers.IntegerField()
    reference = serializers.CharField()
    status = serializers.ChoiceField(choices=["active", "committed", "released", "expired"])
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    closed_at = serializers.DateTimeField(allow_null=True)
    items = ReservationItemEventData(many=True)
    created_by = serializers.CharField(allow_null=True)


class PingData(serializers.Serializer):
    subscription = serializers.IntegerField()
    url = serializers.URLField()


WIDGET_TYPES = [
    EventType.WIDGET_CREATED,
    EventType.WIDGET_UPDATED,
    EventType.WIDGET_DELETED,
    EventType.WIDGET_LOW_STOCK,
    EventType.WIDGET_OUT_OF_STOCK,
    EventType.WIDGET_BACK_IN_STOCK,
]
CATEGORY_TYPES = [EventType.CATEGORY_CREATED, EventType.CATEGORY_UPDATED, EventType.CATEGORY_DELETED]
RESERVATION_TYPES = [
    EventType.RESERVATION_CREATED,
    EventType.RESERVATION_COMMITTED,
    EventType.RESERVATION_RELEASED,
    EventType.RESERVATION_EXPIRED,
]

WidgetEvent = envelope("WidgetEvent", WIDGET_TYPES, WidgetEventData())
CategoryEvent = envelope("CategoryEvent", CATEGORY_TYPES, CategoryEventData())
StockAdjustedEvent = envelope("StockAdjustedEvent", [EventType.STOCK_ADJUSTED], StockAdjustedData())
ReservationEvent = envelope("ReservationEvent", RESERVATION_TYPES, ReservationEventData())
PingEvent = envelope("PingEvent", [EventType.PING], PingData())

RECEIVED = {200: OpenApiResponse(description="Any 2xx: delivered. Anything else, or no answer in 10 s: retried.")}


def _webhook(name: str, summary: str, description: str, body) -> OpenApiWebhook:
    return OpenApiWebhook(
        name=name,
        decorator=extend_schema(
            summary=summary, description=f"{description}\n\n{SIGNED}", request=body, responses=RECEIVED
        ),
    )


widget_events = _webhook(
    "widget",
    "widget.created, .updated, .deleted, .low_stock, .out_of_stock, .back_in_stock",
    "A widget was created, changed or deleted (its last state), or its stock crossed an alert "
    "threshold: `widget.low_stock` when it goes from above its reorder level to at or below it "
    "(not again until it has been above), `widget.out_of_stock` when it reaches 0, "
    "`widget.back_in_stock` when it leaves 0.",
    WidgetEvent,
)
category_events = _webhook(
    "category", "category.created, .updated, .deleted", "A category was created, changed or deleted.", CategoryEvent
)
stock_events = _webhook(
    "stock.adjusted",
    "stock.adjusted",
    "One per movement of the stock ledger (every adjustment, each item of a batch, a widget's "
    "initial stock, a CSV import's corrections).",
    StockAdjustedEvent,
)
reservation_events = _webhook(
    "reservation",
    "reservation.created, .committed, .released, .expired",
    "A reservation was made, committed (its sales are `stock.adjusted` events), released, or "
    "its expiry was recorded. `reservation.expired` is sent by the worker's sweep within "
    "`--sweep-every` seconds (default 60) of `expires_at`; the API shows the reservation as "
    "`expired`, holding nothing, from `expires_at` itself. The alerts an expiry or a release "
    "crosses (`widget.back_in_stock`, ...) are sent with it.",
    ReservationEvent,
)
ping_event = _webhook(
    "webhook.ping", "webhook.ping", "Sent by `POST /api/webhooks/{id}/ping/` to test a receiver.", PingEvent
)


def x_webhooks(result, generator, request, public):
    """Postprocessing hook: OpenAPI 3.0 has no ``webhooks``; file them under ``x-webhooks``."""
    webhooks = result.pop("webhooks", None)
    if webhooks and not result["openapi"].startswith("3.1"):
        result["x-webhooks"] = webhooks
    elif webhooks:
        result["webhooks"] = webhooks
    return result
