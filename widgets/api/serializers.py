"""Representations of the API. Validation lives here; writes go through services.

Input types are strict, so what the OpenAPI schema says is exactly what is accepted:
text must be a JSON string (no control characters, not only whitespace; stored verbatim),
a boolean a JSON boolean, a price a decimal string or an integer, an integer a JSON integer.
HTML forms of the browsable API send only text and keep DRF's coercions.

The speed-ups these serializers use (fields built once per class, a read plan, cheaper URL
and date-time fields) live in fast_fields.py, with a test comparing their output to DRF's.
"""

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils import html

from .. import services
from ..models import ApiToken, Category, ChangeLogEntry, Reservation, ReservationItem, StockMovement, Widget
from ..services import (
    DEFAULT_TTL_SECONDS,
    MAX_BATCH_ITEMS,
    MAX_RESERVATION_ITEMS,
    MAX_STOCK,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
)
from ..validators import SKU_MESSAGE, category_name, multi_line, normalize_sku, one_line
from .exceptions import ItemError
from .fast_fields import DateTimeField, DecimalField, IdentityUrlField, ReadPlanMixin, SharedFieldsMixin

# Every reason but 'initial', which only widget creation writes.
ADJUSTABLE_REASONS = [c for c in StockMovement.Reason.choices if c[0] != StockMovement.Reason.INITIAL]

STOCK_READ_ONLY = "Stock cannot be edited directly; use POST {adjust_url} to record a movement."

# The input rules (widgets.validators) are on the model fields, so the fields built from the
# model carry them; the fields declared here take them from the same place.


class StrictInputMixin:
    """Refuses JSON values of the wrong type; form input (always text) is parsed as usual."""

    json_types: tuple[type, ...] = ()
    json_type_name = ""

    def get_value(self, dictionary):
        self.from_form = html.is_html_input(dictionary)
        return super().get_value(dictionary)

    def to_internal_value(self, data):
        if not getattr(self, "from_form", False) and (
            isinstance(data, bool) != (bool in self.json_types) or not isinstance(data, self.json_types)
        ):
            raise serializers.ValidationError(f"Must be {self.json_type_name}.", code="invalid")
        return super().to_internal_value(data)


class OneLineTextField(StrictInputMixin, serializers.CharField):
    json_types, json_type_name = (str,), "a string"

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)  # stored verbatim
        super().__init__(**kwargs)
        if one_line not in self.validators:  # a field built from the model has it already
            self.validators.append(one_line)


class MultiLineTextField(StrictInputMixin, serializers.CharField):
    json_types, json_type_name = (str,), "a string"

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        if multi_line not in self.validators:
            self.validators.append(multi_line)


class StrictBooleanField(StrictInputMixin, serializers.BooleanField):
    json_types, json_type_name = (bool,), "true or false"


class StrictIntegerField(StrictInputMixin, serializers.IntegerField):
    json_types, json_type_name = (int,), "an integer"


class StrictPrimaryKeyField(StrictInputMixin, serializers.PrimaryKeyRelatedField):
    # Django would read 1.5 as pk 1.
    json_types, json_type_name = (int,), "an integer id"


class SkuField(StrictInputMixin, serializers.RegexField):
    """Case-insensitive on input, stored upper-case (``validators.normalize_sku``)."""

    json_types, json_type_name = (str,), "a string"

    def __init__(self, **kwargs):
        kwargs.setdefault("error_messages", {"invalid": SKU_MESSAGE})
        # The pattern is what the schema publishes; normalize_sku is the rule itself.
        super().__init__(r"^[A-Za-z0-9-]{1,32}\Z", max_length=32, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            return normalize_sku(value)
        except DjangoValidationError:
            self.fail("invalid")


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "decimal", "pattern": r"^[0-9]{1,10}(?:\.[0-9]{1,2})?$"},
            {"type": "integer", "minimum": 0, "maximum": 9_999_999_999},
        ],
        "example": "9.99",
    }
)
class PriceField(StrictInputMixin, DecimalField):
    """A non-negative amount: a decimal string such as "9.99", or a whole number."""

    json_types, json_type_name = (str, int), 'a decimal string such as "9.99", or a whole number'
    PATTERN = r"^[0-9]{1,10}(?:\.[0-9]{1,2})?$"
    default_error_messages = {"invalid": 'Send a decimal string such as "9.99", or a whole number.'}

    def to_internal_value(self, data):
        # Floats are refused: 0.1 is not exactly representable and would be rounded silently.
        if isinstance(data, str) and not getattr(self, "from_form", False) and not re.fullmatch(self.PATTERN, data):
            self.fail("invalid")
        return super().to_internal_value(data)


FIELD_MAPPING = {**serializers.ModelSerializer.serializer_field_mapping, models.DateTimeField: DateTimeField}


class StrictFieldsMixin:
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: OneLineTextField,
        models.TextField: MultiLineTextField,
        models.BooleanField: StrictBooleanField,
        models.IntegerField: StrictIntegerField,
        models.PositiveIntegerField: StrictIntegerField,
        models.DateTimeField: DateTimeField,
    }


class CategorySerializer(SharedFieldsMixin, ReadPlanMixin, StrictFieldsMixin, serializers.HyperlinkedModelSerializer):
    serializer_url_field = IdentityUrlField
    # Unique by slug (so also by name); a clash is a 400 on name, raised by the view.
    name = OneLineTextField(max_length=100, validators=[one_line, category_name])

    class Meta:
        model = Category
        fields = ["id", "url", "name", "slug", "description"]
        read_only_fields = ["slug"]

    # The name's format (a letter or digit, so the slug is never empty) is the pattern above;
    # a taken name or slug is refused by the database's unique constraints, as a 400 (views).


class WidgetSerializer(SharedFieldsMixin, ReadPlanMixin, StrictFieldsMixin, serializers.HyperlinkedModelSerializer):
    serializer_url_field = IdentityUrlField
    sku = SkuField(
        required=False,
        help_text=(
            "Unique, case-insensitive, stored upper-case; a clash is 400 on sku. Assigned (WGT-000042) when omitted."
        ),
    )
    price = PriceField(max_digits=12, decimal_places=2, min_value=0, required=False)
    category = StrictPrimaryKeyField(queryset=Category.objects.all(), allow_null=True, required=False)
    stock = StrictIntegerField(
        min_value=0,
        max_value=MAX_STOCK,
        required=False,
        help_text="Initial stock on create. Afterwards read-only: use the adjust endpoint.",
    )
    reserved = serializers.IntegerField(
        read_only=True, help_text="Units held by active reservations (expired ones no longer count)."
    )
    available = serializers.IntegerField(
        read_only=True, help_text="stock - reserved: the units that can be sold, written off or reserved."
    )
    low_stock = serializers.BooleanField(read_only=True, help_text="available <= reorder_level")

    class Meta:
        model = Widget
        fields = [
            "id",
            "url",
            "sku",
            "name",
            "description",
            "category",
            "price",
            "stock",
            "reserved",
            "available",
            "reorder_level",
            "low_stock",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        # The browsable API's HTML form starts from the model's default: an unticked box
        # would create an archived widget.
        extra_kwargs = {"is_active": {"initial": True}}

    def validate_stock(self, value):
        if self.instance is not None and value != self.instance.stock:
            adjust_url = reverse("widget-adjust", args=[self.instance.pk])
            raise serializers.ValidationError(STOCK_READ_ONLY.format(adjust_url=adjust_url))
        return value


class WidgetUpdateSerializer(WidgetSerializer):
    """The schema of PUT/PATCH: stock is not among the fields that can be changed there."""

    stock = serializers.IntegerField(read_only=True)


class StockMovementSerializer(SharedFieldsMixin, ReadPlanMixin, serializers.ModelSerializer):
    serializer_field_mapping = FIELD_MAPPING
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = StockMovement
        fields = ["id", "widget", "delta", "reason", "note", "stock_after", "created_by", "created_at"]
        read_only_fields = fields


@extend_schema_field({"type": "integer", "minimum": -MAX_STOCK, "maximum": MAX_STOCK, "not": {"enum": [0]}})
class DeltaField(StrictIntegerField):
    def __init__(self, **kwargs):
        super().__init__(min_value=-MAX_STOCK, max_value=MAX_STOCK, **kwargs)


class AdjustmentSerializer(SharedFieldsMixin, serializers.Serializer):
    """One stock adjustment: the body of ``POST /api/widgets/{id}/adjust/``."""

    delta = DeltaField(
        help_text="Units added (+) or removed (-); not zero. received and returned add stock, "
        "sold and damaged remove it, correction goes either way."
    )
    reason = serializers.ChoiceField(choices=ADJUSTABLE_REASONS)
    note = OneLineTextField(max_length=255, required=False, allow_blank=True, default="")

    def validate_delta(self, value):
        if value == 0:
            raise serializers.ValidationError("delta must not be zero.")
        return value

    def validate(self, attrs):
        # The service's own rule (the sign each reason allows), asked before any row is locked.
        try:
            services.check_movement(delta=attrs["delta"], reason=attrs["reason"])
        except services.InvalidMovement as exc:
            raise serializers.ValidationError({exc.field: [f"{exc.detail}."]}, code=exc.code) from None
        return attrs


class BatchItemSerializer(AdjustmentSerializer):
    """One line of a batch: an adjustment of the named widget."""

    widget = StrictIntegerField(min_value=1, max_value=2**63 - 1, help_text="Widget id; may appear several times.")


# DRF's own say "Ensure this field has at least 1 elements."
ITEMS_LENGTH_MESSAGES = {"min_length": "Send at least one item.", "max_length": "Send at most {max_length} items."}


class FirstItemErrorMixin:
    """A body with a list of ``items``: an invalid item is answered as an ``ItemError``
    naming the first one (``index``) and its field, like a conflict with the stock."""

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            errors = exc.detail.get("items") if isinstance(exc.detail, dict) else None
            # Per-item errors come keyed by position ({3: {"delta": [...]}}); name the first.
            if isinstance(errors, list):
                errors = dict(enumerate(errors))
            by_index = {int(k): v for k, v in (errors or {}).items() if str(k).isdigit() and isinstance(v, dict) and v}
            if by_index:
                index = min(by_index)
                field, messages = next(iter(by_index[index].items()))
                message = messages[0] if isinstance(messages, list) else messages
                raise ItemError(index=index, detail=f"{field}: {message}", code=message.code, field=field) from None
            raise


class AdjustmentBatchSerializer(FirstItemErrorMixin, SharedFieldsMixin, serializers.Serializer):
    """The body of ``POST /api/adjustments/``: applied all or nothing, in this order."""

    items = BatchItemSerializer(
        many=True, min_length=1, max_length=MAX_BATCH_ITEMS, error_messages=ITEMS_LENGTH_MESSAGES
    )


class BatchResultSerializer(SharedFieldsMixin, serializers.Serializer):
    movements = StockMovementSerializer(many=True)


class ErrorSerializer(serializers.Serializer):
    """The body of every non-validation error."""

    detail = serializers.CharField()
    code = serializers.CharField()


class InsufficientStockSerializer(ErrorSerializer):
    available = serializers.IntegerField()


class ItemErrorSerializer(ErrorSerializer):
    """A batch refused because of one item; nothing of it was applied."""

    index = serializers.IntegerField(help_text="0-based position of the first failing item.")
    field = serializers.CharField(required=False, help_text="The item's field at fault, when one is.")
    widget = serializers.IntegerField(required=False, help_text="The item's widget, on a reservation's 409.")
    available = serializers.IntegerField(required=False, help_text="Units available (stock - reserved), on 409.")


# --- Reservations ---------------------------------------------------------------------------


class ReservationItemInputSerializer(SharedFieldsMixin, serializers.Serializer):
    widget = StrictIntegerField(min_value=1, max_value=2**63 - 1, help_text="Widget id; each widget once.")
    quantity = StrictIntegerField(min_value=1, max_value=MAX_STOCK, help_text="Units to hold.")


class TtlField(StrictIntegerField):
    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", f"Seconds to hold the units: {MIN_TTL_SECONDS}-{MAX_TTL_SECONDS}.")
        super().__init__(min_value=MIN_TTL_SECONDS, max_value=MAX_TTL_SECONDS, **kwargs)


class ReservationCreateSerializer(FirstItemErrorMixin, SharedFieldsMixin, serializers.Serializer):
    """The body of ``POST /api/reservations/``: every item held, or none."""

    reference = OneLineTextField(max_length=100, help_text="Your reference, e.g. the order number.")
    ttl_seconds = TtlField(required=False, default=DEFAULT_TTL_SECONDS)
    items = ReservationItemInputSerializer(
        many=True, min_length=1, max_length=MAX_RESERVATION_ITEMS, error_messages=ITEMS_LENGTH_MESSAGES
    )

    def validate_items(self, items):
        seen = set()
        for index, item in enumerate(items):
            if item["widget"] in seen:
                raise ItemError(
                    index=index,
                    detail=f"widget: widget {item['widget']} appears more than once.",
                    code="duplicate_widget",
                    field="widget",
                )
            seen.add(item["widget"])
        return items


class ReservationExtendSerializer(SharedFieldsMixin, serializers.Serializer):
    """The body of ``POST /api/reservations/{id}/extend/``."""

    ttl_seconds = TtlField(
        help_text=(
            f"Hold until this many seconds from now ({MIN_TTL_SECONDS}-{MAX_TTL_SECONDS}); "
            "a later expires_at is kept: an extension never shortens."
        )
    )


class ReservationItemSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    widget = serializers.IntegerField(source="widget_id", read_only=True)

    class Meta:
        model = ReservationItem
        fields = ["widget", "quantity"]
        read_only_fields = fields


class ReservationSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    serializer_field_mapping = FIELD_MAPPING
    status = serializers.ChoiceField(
        choices=Reservation.STATES,
        source="state",
        read_only=True,
        help_text="active, committed, released, or expired: active and past expires_at (holds nothing).",
    )
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    items = ReservationItemSerializer(many=True, read_only=True)

    class Meta:
        model = Reservation
        fields = ["id", "reference", "status", "created_at", "expires_at", "closed_at", "items", "created_by"]
        read_only_fields = fields
        extra_kwargs = {"closed_at": {"help_text": "When it was committed or released."}}


class CommittedReservationSerializer(ReservationSerializer):
    """A reservation just committed, with the ``sold`` movements it wrote."""

    movements = StockMovementSerializer(many=True, read_only=True)

    class Meta(ReservationSerializer.Meta):
        fields = [*ReservationSerializer.Meta.fields, "movements"]
        read_only_fields = fields


class ReservationConflictSerializer(ErrorSerializer):
    """A reservation that cannot be committed, released or extended."""

    status = serializers.ChoiceField(choices=Reservation.STATES, help_text="The reservation's status now.")


# --- Tokens -------------------------------------------------------------------------------------

MAX_TOKEN_DAYS = 365


class TokenRequestSerializer(serializers.Serializer):
    """The body of ``POST /api/auth/token/``: credentials plus the new token's options."""

    username = serializers.CharField(trim_whitespace=False)
    password = serializers.CharField(trim_whitespace=False, write_only=True, style={"input_type": "password"})
    name = OneLineTextField(max_length=100, required=False, allow_blank=True, default="")
    expires_in_days = StrictIntegerField(
        min_value=1,
        max_value=MAX_TOKEN_DAYS,
        required=False,
        allow_null=True,
        help_text="Lifetime in days; the server default (DJANGO_TOKEN_EXPIRY_DAYS) when omitted or null.",
    )
    read_only = StrictBooleanField(default=False, help_text="Allow only GET, HEAD and OPTIONS.")


class ApiTokenSerializer(serializers.ModelSerializer):
    """A token as its owner sees it later: never the key, only its prefix."""

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "read_only", "created_at", "last_used_at", "expires_at", "revoked_at"]
        read_only_fields = fields


class IssuedTokenSerializer(serializers.ModelSerializer):
    """A token just issued: the only time its key is shown."""

    token = serializers.CharField(source="raw_key", help_text="The key. Shown only this once.")

    class Meta:
        model = ApiToken
        fields = ["token", "id", "name", "prefix", "read_only", "expires_at"]
        read_only_fields = fields


# --- Change log ----------------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "object",
        "description": "Changed fields: `{field: [old, new]}`; old is null on create, new on delete.",
        "additionalProperties": {"type": "array", "items": {}, "minItems": 2, "maxItems": 2},
    }
)
class ChangesField(serializers.JSONField):
    pass


class ChangeLogEntrySerializer(SharedFieldsMixin, serializers.ModelSerializer):
    user = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Who made the change; null for a change made by no user (a command, the system).",
    )
    changes = ChangesField(read_only=True)

    class Meta:
        model = ChangeLogEntry
        fields = ["id", "timestamp", "user", "action", "object_type", "object_id", "object_repr", "changes"]
        read_only_fields = fields
