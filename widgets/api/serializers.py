"""Representations of the API. Validation lives here; writes go through services.

Input types are strict, so what the OpenAPI schema says is exactly what is accepted:
text must be a JSON string (no control characters, not only whitespace; stored verbatim),
a boolean a JSON boolean, a price a decimal string or an integer, an integer a JSON integer. HTML forms of the browsable API send only text and
keep DRF's coercions.
"""
import copy
import datetime
import re
from collections.abc import Mapping

from django.core.exceptions import FieldDoesNotExist
from django.core.signals import setting_changed
from django.core.validators import RegexValidator
from django.db import models
from django.dispatch import receiver
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject
from rest_framework.settings import api_settings
from rest_framework.utils import html

from ..models import ApiToken, Category, ChangeLogEntry, StockMovement, Widget
from ..services import MAX_BATCH_ITEMS, MAX_STOCK
from .exceptions import ItemError

# Every reason but 'initial', which only widget creation writes.
ADJUSTABLE_REASONS = [c for c in StockMovement.Reason.choices if c[0] != StockMovement.Reason.INITIAL]

STOCK_READ_ONLY = "Stock cannot be edited directly; use POST {adjust_url} to record a movement."

# Control characters never belong in stored text; PostgreSQL cannot even store NUL.
# The same patterns are published in the schema; drf-spectacular turns \Z (Python's true
# end of string, where $ would allow a trailing newline) into ECMA's $.
_CONTROL = r"\x00-\x1f\x7f-\x9f\ufeff"
# Both refuse the empty string (drf-spectacular documents "" itself where a field allows
# blank) and text that is only whitespace; surrounding whitespace is kept, as all text is.
ONE_LINE_PATTERN = rf"^[^{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*\Z"
# One-line text with at least one ASCII letter or digit, so that the slug is never empty.
CATEGORY_NAME_PATTERN = rf"^[^{_CONTROL}]*[A-Za-z0-9][^{_CONTROL}]*\Z"
MULTI_LINE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff]+\Z"
one_line = RegexValidator(
    ONE_LINE_PATTERN, "Must contain a visible character and no control characters (tabs, line breaks, NUL...)."
)
multi_line = RegexValidator(
    MULTI_LINE_PATTERN, "Must not contain control characters other than tab and line breaks."
)


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
        self.validators.append(one_line)


class MultiLineTextField(StrictInputMixin, serializers.CharField):
    json_types, json_type_name = (str,), "a string"

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators.append(multi_line)


class StrictBooleanField(StrictInputMixin, serializers.BooleanField):
    json_types, json_type_name = (bool,), "true or false"


class StrictIntegerField(StrictInputMixin, serializers.IntegerField):
    json_types, json_type_name = (int,), "an integer"


class StrictPrimaryKeyField(StrictInputMixin, serializers.PrimaryKeyRelatedField):
    # Django would read 1.5 as pk 1.
    json_types, json_type_name = (int,), "an integer id"


class SkuField(StrictInputMixin, serializers.RegexField):
    """Case-insensitive on input, stored upper-case."""

    json_types, json_type_name = (str,), "a string"

    def __init__(self, **kwargs):
        kwargs.setdefault("error_messages", {"invalid": "SKU must be 1-32 characters of A-Z, 0-9 and '-'."})
        super().__init__(r"^[A-Za-z0-9-]{1,32}\Z", max_length=32, trim_whitespace=False, **kwargs)
        self.regex = re.compile(r"[A-Za-z0-9-]{1,32}")

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # Checked before upper-casing: 'ı'.upper() is 'I' and 'ﬀ'.upper() is 'FF'.
        if not self.regex.fullmatch(value):
            self.fail("invalid")
        return value.upper()


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "decimal", "pattern": r"^[0-9]{1,10}(?:\.[0-9]{1,2})?$"},
            {"type": "integer", "minimum": 0, "maximum": 9_999_999_999},
        ],
        "example": "9.99",
    }
)
class PriceField(StrictInputMixin, serializers.DecimalField):
    """A non-negative amount: a decimal string such as "9.99", or a whole number."""

    json_types, json_type_name = (str, int), 'a decimal string such as "9.99", or a whole number'
    PATTERN = r"^[0-9]{1,10}(?:\.[0-9]{1,2})?$"
    default_error_messages = {"invalid": 'Send a decimal string such as "9.99", or a whole number.'}

    def to_internal_value(self, data):
        # Floats are refused: 0.1 is not exactly representable and would be rounded silently.
        if isinstance(data, str) and not getattr(self, "from_form", False) and not re.fullmatch(self.PATTERN, data):
            self.fail("invalid")
        return super().to_internal_value(data)


class IdentityUrlField(serializers.HyperlinkedIdentityField):
    """The object's ``url``, with ``reverse()`` run once per request instead of once
    per row: only the id differs between rows. Same output as DRF's field."""

    PLACEHOLDER = "987654321987654321"

    def get_url(self, obj, view_name, request, format):
        lookup_value = getattr(obj, self.lookup_field, None)
        if format or request is None or lookup_value in (None, ""):
            return super().get_url(obj, view_name, request, format)
        cached = getattr(self, "_url_template", None)
        if cached is None or cached[0] is not request:
            url = self.reverse(view_name, kwargs={self.lookup_url_kwarg: self.PLACEHOLDER}, request=request)
            cached = self._url_template = (request, *url.split(self.PLACEHOLDER))
        if len(cached) != 3:  # the placeholder did not appear exactly once
            return super().get_url(obj, view_name, request, format)
        return f"{cached[1]}{lookup_value}{cached[2]}"


class DateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField, asking for the active time zone (a context-local look-up)
    once per request rather than for every value of every row, and writing a UTC time
    for a UTC output zone in ISO 8601 directly. Same output."""

    def to_representation(self, value):
        utc_iso = self.__dict__.get("_utc_iso")
        if utc_iso is None:
            if not hasattr(self, "timezone"):
                self.timezone = self.default_timezone()
            output_format = getattr(self, "format", api_settings.DATETIME_FORMAT)
            utc_iso = self._utc_iso = (
                isinstance(output_format, str) and output_format.lower() == ISO_8601 and str(self.timezone) == "UTC"
            )
        if utc_iso and type(value) is datetime.datetime and value.tzinfo is datetime.timezone.utc:
            # What DRF writes after converting to the (UTC) output zone: +00:00 as Z.
            return f"{value.isoformat()[:-6]}Z"
        return super().to_representation(value)


FIELD_MAPPING = {**serializers.ModelSerializer.serializer_field_mapping, models.DateTimeField: DateTimeField}


# Fields built once per serializer class (SharedFieldsMixin) and how ReadPlanMixin reads
# them; rebuilt when DRF's settings change, as some fields read them when built.
_field_templates: dict[type, dict[str, serializers.Field]] = {}
_read_recipes: dict[type, list[tuple]] = {}


@receiver(setting_changed)
def _forget_field_templates(*, setting, **kwargs):
    if setting == "REST_FRAMEWORK":
        _field_templates.clear()
        _read_recipes.clear()


class SharedFieldsMixin:
    """Builds a serializer class's fields once instead of for every serializer.

    DRF's ``get_fields`` builds every field anew for each serializer (deep copies of the
    declared fields, ModelSerializer's mapping of the model's fields): about a third of
    the CPU of serving one widget. Here they are built once per class, and each serializer
    gets its own shallow copies, which it binds to itself as usual, so no state set on a
    field while serving one request (its parent, a cached URL or time zone) is seen by
    another. Fields holding other fields (nested serializers, lists, many-relations) are
    deep-copied, as DRF does.
    """

    def get_fields(self):
        template = _field_templates.get(type(self))
        if template is None:
            template = _field_templates[type(self)] = super().get_fields()
        return {name: _copy_field(field) for name, field in template.items()}


def _copy_field(field):
    if isinstance(field, serializers.BaseSerializer) or hasattr(field, "child") or hasattr(field, "child_relation"):
        return copy.deepcopy(field)
    clone = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    return clone


# Fields whose output is a plain conversion of the model attribute: their own
# to_representation is exactly this (subclasses that keep it, the strict input fields
# above among them, are recognised by the method, not the class).
def _unchanged(value):
    return value


PLAIN_OUTPUT = {
    serializers.IntegerField.to_representation: int,
    serializers.CharField.to_representation: str,
    serializers.ReadOnlyField.to_representation: _unchanged,
}


def _own(field, name):
    """The function behind ``field.name`` (a method as its class defines it)."""
    return getattr(type(field), name)

class ReadPlanMixin:
    """DRF's ``to_representation`` with the per-field decisions made once per
    serializer instead of once per row: which fields are readable and, for fields that
    read a model attribute as DRF's ``Field.get_attribute`` does, a direct read of the
    attribute, handed to the field's own ``to_representation`` (or, for integers,
    strings and foreign-key ids, whose ``to_representation`` is a plain conversion, to
    that conversion). Every other field goes through its own ``get_attribute`` and
    ``to_representation`` as in DRF. The output is identical. Needs SharedFieldsMixin
    (the decisions are kept per class)."""

    def to_representation(self, instance):
        model = self.Meta.model
        if type(instance) is not model or isinstance(instance, Mapping):
            return super().to_representation(instance)
        plan = self.__dict__.get("_read_plan")
        if plan is None:
            plan = self._read_plan = self._make_read_plan(model)
        ret = {}
        for name, attname, convert, field in plan:
            if attname is not None:
                value = getattr(instance, attname)
                ret[name] = None if value is None else convert(value)
                continue
            try:
                attribute = field.get_attribute(instance)
            except SkipField:
                continue
            check_for_none = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            ret[name] = None if check_for_none is None else field.to_representation(attribute)
        return ret

    def _make_read_plan(self, model):
        # The decisions are the same for every serializer of a class (its fields are built
        # once, SharedFieldsMixin); the plan binds them to this serializer's fields.
        recipe = _read_recipes.get(type(self))
        if recipe is None:
            recipe = _read_recipes[type(self)] = [self._read_step(field, model) for field in self._readable_fields]
        fields = self.fields
        return [
            (name, attname, convert or fields[name].to_representation, fields[name])
            for name, attname, convert in recipe
        ]

    @staticmethod
    def _read_step(field, model):
        """(name, attribute to read or None for DRF's way, conversion or None for the
        field's own to_representation)."""
        slow = (field.field_name, None, None)
        if len(field.source_attrs) != 1:
            return slow
        source = field.source_attrs[0]
        try:
            model_field = model._meta.get_field(source)
        except FieldDoesNotExist:  # a property, perhaps
            model_field = None
        if isinstance(field, serializers.PrimaryKeyRelatedField):
            # A foreign key's id is on the instance: no related object is loaded, as in DRF.
            if (
                _own(field, "get_attribute") is serializers.RelatedField.get_attribute
                and _own(field, "to_representation") is serializers.PrimaryKeyRelatedField.to_representation
                and field.pk_field is None
                and model_field is not None and model_field.many_to_one and model_field.concrete
            ):
                return (field.field_name, model_field.attname, _unchanged)
            return slow
        # Otherwise only fields that read their source as DRF's Field does, a model field
        # or a property, whose value is then given to their own to_representation.
        if _own(field, "get_attribute") is not serializers.Field.get_attribute:
            return slow
        if model_field is None:
            if isinstance(getattr(model, source, None), property):
                return (field.field_name, source, None)
            return slow
        if model_field.is_relation or not model_field.concrete:
            return slow
        return (field.field_name, source, PLAIN_OUTPUT.get(_own(field, "to_representation")))


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
    name = OneLineTextField(
        max_length=100,
        validators=[RegexValidator(CATEGORY_NAME_PATTERN, "The name must contain a letter (A-Z) or a digit.")],
    )

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
            "Unique, case-insensitive, stored upper-case; a clash is 400 on sku. "
            "Assigned (WGT-000042) when omitted."
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
    low_stock = serializers.BooleanField(read_only=True, help_text="stock <= reorder_level")

    class Meta:
        model = Widget
        fields = [
            "id", "url", "sku", "name", "description", "category", "price", "stock",
            "reorder_level", "low_stock", "is_active", "created_at", "updated_at",
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

    delta = DeltaField(help_text="Units added (+) or removed (-); not zero.")
    reason = serializers.ChoiceField(choices=ADJUSTABLE_REASONS)
    note = OneLineTextField(max_length=255, required=False, allow_blank=True, default="")

    def validate_delta(self, value):
        if value == 0:
            raise serializers.ValidationError("delta must not be zero.")
        return value


class BatchItemSerializer(AdjustmentSerializer):
    """One line of a batch: an adjustment of the named widget."""

    widget = StrictIntegerField(
        min_value=1, max_value=2**63 - 1, help_text="Widget id; may appear several times."
    )


class AdjustmentBatchSerializer(SharedFieldsMixin, serializers.Serializer):
    """The body of ``POST /api/adjustments/``: applied all or nothing, in this order."""

    items = BatchItemSerializer(
        many=True,
        min_length=1,
        max_length=MAX_BATCH_ITEMS,
        # DRF's own say "Ensure this field has at least 1 elements."
        error_messages={
            "min_length": "Send at least one item.",
            "max_length": "Send at most {max_length} items.",
        },
    )

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
    available = serializers.IntegerField(required=False, help_text="Stock available, on 409.")


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
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    changes = ChangesField(read_only=True)

    class Meta:
        model = ChangeLogEntry
        fields = ["id", "timestamp", "user", "action", "object_type", "object_id", "object_repr", "changes"]
        read_only_fields = fields
