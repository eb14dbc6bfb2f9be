"""One FilterSet per model, shared by every list that filters that model.

django-filter raises a 400 for most bad values, but its BooleanFilter quietly ignores
``?is_active=maybe``; ``StrictBooleanFilter`` refuses it like every other bad value.
Numbers and datetimes are kept within what every database can compare, so no value a
client sends reaches the database as an error (a 500).
"""

import copy
import datetime as dt
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django import forms
from django.db.models import Q
from django.http import QueryDict
from django_filters import filters as base_filters
from django_filters import rest_framework as filters
from django_filters import utils
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field

from ..models import Category, ChangeLogEntry, Reservation, StockMovement, Widget

TRUE_VALUES = {"true", "1", "yes"}
FALSE_VALUES = {"false", "0", "no"}


class StrictBooleanField(forms.Field):
    widget = forms.Select(choices=[("", "---------"), ("true", "Yes"), ("false", "No")])

    def to_python(self, value):
        if value in (None, ""):
            return None
        lowered = str(value).lower()
        if lowered in TRUE_VALUES:
            return True
        if lowered in FALSE_VALUES:
            return False
        raise forms.ValidationError("Must be true or false.", code="invalid")


class StrictBooleanFilter(base_filters.BooleanFilter):
    # The base class, not the rest_framework one: that swaps in a widget which turns
    # unknown values into "no filter" before the field can refuse them.
    field_class = StrictBooleanField


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, without building a FilterSet (a form and a copy of
    every filter) for a request that names none of its filters: the queryset would
    come back unchanged. Most requests, every detail request included, name none.

    A request that names some gets a FilterSet of those filters only (``FilterSet(only=)``):
    a filter the request does not name leaves the queryset as it is and cannot fail, so
    copying it, its form field and cleaning its empty value changed nothing."""

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None:
            return queryset
        names = tuple(filterset_class.base_filters)
        named = [key for key in request.query_params if key.startswith(names)]
        if not named:
            return queryset
        if not issubclass(filterset_class, FilterSet):
            return super().filter_queryset(request, queryset, view)
        only = {
            name
            for name, filter_ in filterset_class.base_filters.items()
            if filter_.extra.get("required") or any(key.startswith(name) for key in named)
        }
        filterset = filterset_class(**self.get_filterset_kwargs(request, queryset, view), only=only)
        if not filterset.is_valid() and self.raise_exception:
            raise utils.translate_validation(filterset.errors)
        return filterset.qs


class FilterSet(filters.FilterSet):
    """django-filter's FilterSet, building its form class once per FilterSet class (and set
    of filters) instead of once per request (a new class with a form field per filter). The
    class holds form fields only, which every form deep-copies for itself, and no filter
    here has choices that depend on the request.

    ``only``: the names of the filters to use (FilterBackend passes those the request
    names); the others are not copied, so they are neither in the form nor applied."""

    _form_classes: dict[tuple, type] = {}

    def __init__(self, data=None, queryset=None, *, request=None, prefix=None, only=None):
        if only is None:
            super().__init__(data, queryset, request=request, prefix=prefix)
            return
        # django-filter's own __init__, deep-copying the named filters only (one memo, as
        # its deepcopy of the whole dict shares one).
        if queryset is None:
            queryset = self._meta.model._default_manager.all()
        self.is_bound = data is not None
        self.data = data or QueryDict()
        self.queryset = queryset
        self.request = request
        self.form_prefix = prefix
        memo = {}
        self.filters = {name: copy.deepcopy(f, memo) for name, f in self.base_filters.items() if name in only}
        for filter_ in self.filters.values():
            filter_.model = queryset.model
            filter_.parent = self

    def get_form_class(self):
        key = (type(self), tuple(self.filters))
        form_class = self._form_classes.get(key)
        if form_class is None:
            if len(self._form_classes) >= 1000:  # a bound on the combinations remembered
                self._form_classes.clear()
            form_class = self._form_classes[key] = super().get_form_class()
        return form_class


INT64 = 2**63 - 1


@extend_schema_field({"type": "integer", "minimum": -INT64 - 1, "maximum": INT64})
class IntegerFilter(filters.NumberFilter):
    """A whole number within 64 bits (the widest integer column there is)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", -INT64 - 1)
        kwargs.setdefault("max_value", INT64)
        super().__init__(*args, **kwargs)

    def get_max_validator(self):
        return None  # max_value above says it


class PriceFilter(filters.NumberFilter):
    """A price bound. Prices have 2 decimal places and at most 10 integer digits, so a bound
    is rounded towards the prices it admits and clamped: ``min_price=0.001`` means 0.01 and
    ``min_price=1e999999`` matches nothing (PostgreSQL could not even parse it)."""

    LIMIT = Decimal(10**10)

    def get_max_validator(self):
        return None  # clamped below instead of refused

    def filter(self, qs, value):
        if value is not None:
            value = max(min(value, self.LIMIT), -self.LIMIT)
            rounding = ROUND_CEILING if self.lookup_expr == "gte" else ROUND_FLOOR
            value = value.quantize(Decimal("0.01"), rounding=rounding)
        return super().filter(qs, value)


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 datetime, turned into UTC here: PostgreSQL refuses some offsets that Python
    accepts (-23:17), and a date at the edge of the calendar may not survive the conversion."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(dt.UTC)
        except OverflowError:
            raise forms.ValidationError("Date out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


@extend_schema_field({"type": "string", "maxLength": 200})
class TextFilter(filters.CharFilter):
    """Free text, at most 200 characters: a LIKE pattern of 100 kB is work, not a search."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 200)
        super().__init__(*args, **kwargs)


class CategoryReferenceField(forms.CharField):
    """A category named by id or by slug; one that does not exist is a 400 naming the
    filter, like any other bad value (an empty list would read as "no widgets there")."""

    def clean(self, value):
        value = super().clean(value)  # a string within max_length, without NUL
        if value in self.empty_values:
            return None
        if value.isascii() and value.isdigit():
            # Longer than any 64-bit id: no such category (int() of it would overflow the database).
            found = Category.objects.filter(pk=int(value)).first() if len(value) <= 18 else None
        else:
            found = Category.objects.filter(slug=value).first()
        if found is None:
            raise forms.ValidationError(f"No category with the id or slug '{value}'.", code="invalid_choice")
        return found


@extend_schema_field({"type": "string", "maxLength": 200})
class CategoryReferenceFilter(filters.Filter):
    field_class = CategoryReferenceField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 200)
        super().__init__(*args, **kwargs)


class CategoryFilter(FilterSet):
    search = TextFilter(method="filter_search", label="Search name and description")
    ordering = filters.OrderingFilter(fields=["name", "id"])

    class Meta:
        model = Category
        fields = ["search"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))


class WidgetFilter(FilterSet):
    search = TextFilter(method="filter_search", label="Search SKU, name and description")
    category = CategoryReferenceFilter(field_name="category", label="Category (id or slug)")
    is_active = StrictBooleanFilter()
    low_stock = StrictBooleanFilter(method="filter_low_stock", label="Low stock")
    min_price = PriceFilter(field_name="price", lookup_expr="gte")
    max_price = PriceFilter(field_name="price", lookup_expr="lte")
    min_stock = IntegerFilter(field_name="stock", lookup_expr="gte")
    max_stock = IntegerFilter(field_name="stock", lookup_expr="lte")
    # ``available`` is stock - reserved, annotated by Widget.objects.with_availability().
    min_available = IntegerFilter(field_name="available", lookup_expr="gte", label="Available at least")
    max_available = IntegerFilter(field_name="available", lookup_expr="lte", label="Available at most")
    updated_after = UtcIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    updated_before = UtcIsoDateTimeFilter(field_name="updated_at", lookup_expr="lte")
    ordering = filters.OrderingFilter(
        fields=["name", "sku", "stock", "available", "price", "created_at", "updated_at", "id"]
    )

    class Meta:
        model = Widget
        fields = ["search", "category", "is_active", "low_stock"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(sku__icontains=value) | Q(name__icontains=value) | Q(description__icontains=value))

    def filter_low_stock(self, queryset, name, value):
        # Available (stock - reserved) at or below the reorder level.
        return queryset.low_stock() if value else queryset.not_low_stock()


class StockMovementFilter(FilterSet):
    # A number, not a model choice: a <select> of every widget would not scale.
    widget = IntegerFilter(field_name="widget_id")
    reason = filters.ChoiceFilter(choices=StockMovement.Reason.choices)
    created_by = TextFilter(field_name="created_by__username", label="Created by (username)")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lte")

    class Meta:
        model = StockMovement
        fields = ["widget", "reason", "created_by"]


class ChangeLogFilter(FilterSet):
    object_type = filters.ChoiceFilter(choices=ChangeLogEntry.ObjectType.choices)
    object_id = IntegerFilter(field_name="object_id")
    user = filters.CharFilter(field_name="user__username", label="Changed by (username)")
    since = UtcIsoDateTimeFilter(field_name="timestamp", lookup_expr="gte", label="At or after (ISO 8601)")

    class Meta:
        model = ChangeLogEntry
        fields = ["object_type", "object_id", "user", "since"]


class ReservationFilter(FilterSet):
    status = filters.ChoiceFilter(
        choices=[(state, state) for state in Reservation.STATES],
        method="filter_status",
        label="Status (expired: active and past expires_at)",
    )
    reference = TextFilter(field_name="reference", label="Reference (exact)")
    # A number, not a model choice: a <select> of every widget would not scale.
    widget = IntegerFilter(field_name="items__widget_id", label="Holds (or held) this widget")
    created_by = TextFilter(field_name="created_by__username", label="Created by (username)")

    class Meta:
        model = Reservation
        fields = ["status", "reference", "widget", "created_by"]

    def filter_status(self, queryset, name, value):
        return queryset.in_state(value)
