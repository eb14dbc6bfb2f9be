"""Representations of the API. Validation lives here; writes go through services."""
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import SKU_PATTERN, ApiToken, Category, ChangeLogEntry, StockMovement, Widget
from ..services import MAX_BATCH_ITEMS, MAX_STOCK
from .exceptions import ItemError

# Every reason but 'initial', which only widget creation writes.
ADJUSTABLE_REASONS = [c for c in StockMovement.Reason.choices if c[0] != StockMovement.Reason.INITIAL]

STOCK_READ_ONLY = "Stock cannot be edited directly; use POST {adjust_url} to record a movement."


class CategorySerializer(serializers.HyperlinkedModelSerializer):
    class Meta:
        model = Category
        fields = ["id", "url", "name", "slug", "description"]
        read_only_fields = ["slug"]

    def validate_name(self, value):
        problem = Category.objects.name_problem(value, exclude_pk=getattr(self.instance, "pk", None))
        if problem:
            raise serializers.ValidationError(problem)
        return value


class WidgetSerializer(serializers.HyperlinkedModelSerializer):
    sku = serializers.RegexField(
        SKU_PATTERN,
        max_length=32,
        required=False,
        help_text="Unique, case-insensitive, stored upper-case. Assigned (WGT-000042) when omitted.",
        error_messages={"invalid": "SKU must be 1-32 characters of A-Z, 0-9 and '-'."},
    )
    category = serializers.PrimaryKeyRelatedField(
        queryset=Category.objects.all(), allow_null=True, required=False
    )
    stock = serializers.IntegerField(
        min_value=0,
        max_value=MAX_STOCK,
        required=False,
        help_text="Initial stock on create. Afterwards read-only: use the adjust endpoint.",
    )
    low_stock = serializers.BooleanField(read_only=True, help_text="stock <= reorder_level")

    class Meta:
        model = Widget
        fields = [
            "id", "url", "sku", "name", "description", "category", "price", "stock",
            "reorder_level", "low_stock", "is_active", "created_at", "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def to_internal_value(self, data):
        # Upper-case before the pattern check, so 'wgt-1' is accepted as 'WGT-1'.
        if hasattr(data, "get") and isinstance(data.get("sku"), str):
            data = data.copy()
            data["sku"] = data["sku"].strip().upper()
        return super().to_internal_value(data)

    def validate_sku(self, value):
        clash = Widget.objects.filter(sku=value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError("A widget with this SKU already exists.")
        return value

    def validate_stock(self, value):
        if self.instance is not None and value != self.instance.stock:
            adjust_url = reverse("widget-adjust", args=[self.instance.pk])
            raise serializers.ValidationError(STOCK_READ_ONLY.format(adjust_url=adjust_url))
        return value


class StockMovementSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = StockMovement
        fields = ["id", "widget", "delta", "reason", "note", "stock_after", "created_by", "created_at"]
        read_only_fields = fields


class AdjustmentSerializer(serializers.Serializer):
    """One stock adjustment: the body of ``POST /api/widgets/{id}/adjust/``."""

    delta = serializers.IntegerField(
        min_value=-MAX_STOCK, max_value=MAX_STOCK, help_text="Units added (+) or removed (-); not zero."
    )
    reason = serializers.ChoiceField(choices=ADJUSTABLE_REASONS)
    note = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")

    def validate_delta(self, value):
        if value == 0:
            raise serializers.ValidationError("delta must not be zero.")
        return value


class BatchItemSerializer(AdjustmentSerializer):
    """One line of a batch: an adjustment of the named widget."""

    widget = serializers.IntegerField(min_value=1, help_text="Widget id; may appear several times.")


class AdjustmentBatchSerializer(serializers.Serializer):
    """The body of ``POST /api/adjustments/``: applied all or nothing, in this order."""

    items = BatchItemSerializer(many=True, min_length=1, max_length=MAX_BATCH_ITEMS)

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
                raise ItemError(
                    index=index, detail=f"{field}: {message}", code=message.code, field=field
                ) from None
            raise


class BatchResultSerializer(serializers.Serializer):
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
    available = serializers.IntegerField(required=False, help_text="Stock available, on 409.")


# --- Tokens -------------------------------------------------------------------------------------

MAX_TOKEN_DAYS = 365


class TokenRequestSerializer(serializers.Serializer):
    """The body of ``POST /api/auth/token/``: credentials plus the new token's options."""

    username = serializers.CharField(trim_whitespace=False)
    password = serializers.CharField(trim_whitespace=False, write_only=True, style={"input_type": "password"})
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    expires_in_days = serializers.IntegerField(
        min_value=1,
        max_value=MAX_TOKEN_DAYS,
        required=False,
        help_text="Lifetime in days; the server default (DJANGO_TOKEN_EXPIRY_DAYS) when omitted.",
    )
    read_only = serializers.BooleanField(default=False, help_text="Allow only GET, HEAD and OPTIONS.")


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


class ChangeLogEntrySerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    changes = ChangesField(read_only=True)

    class Meta:
        model = ChangeLogEntry
        fields = ["id", "timestamp", "user", "action", "object_type", "object_id", "object_repr", "changes"]
        read_only_fields = fields
