"""One FilterSet per model, shared by every list that filters that model.

django-filter raises a 400 for most bad values, but its BooleanFilter quietly ignores
``?is_active=maybe``; ``StrictBooleanFilter`` refuses it like every other bad value.
"""
from django import forms
from django.db.models import F, Q
from django_filters import filters as base_filters
from django_filters import rest_framework as filters
from django_filters.rest_framework import DjangoFilterBackend

from ..models import Category, ChangeLogEntry, StockMovement, Widget

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
    come back unchanged. Most requests, every detail request included, name none."""

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            names = tuple(filterset_class.base_filters)
            if not any(key.startswith(names) for key in request.query_params):
                return queryset
        return super().filter_queryset(request, queryset, view)


class IntegerFilter(filters.NumberFilter):
    field_class = forms.IntegerField


class CategoryFilter(filters.FilterSet):
    search = filters.CharFilter(method="filter_search", label="Search name and description")
    ordering = filters.OrderingFilter(fields=["name", "id"])

    class Meta:
        model = Category
        fields = ["search"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))


class WidgetFilter(filters.FilterSet):
    search = filters.CharFilter(method="filter_search", label="Search SKU, name and description")
    category = filters.CharFilter(method="filter_category", label="Category (id or slug)")
    is_active = StrictBooleanFilter()
    low_stock = StrictBooleanFilter(method="filter_low_stock", label="Low stock")
    min_price = filters.NumberFilter(field_name="price", lookup_expr="gte")
    max_price = filters.NumberFilter(field_name="price", lookup_expr="lte")
    min_stock = IntegerFilter(field_name="stock", lookup_expr="gte")
    max_stock = IntegerFilter(field_name="stock", lookup_expr="lte")
    updated_after = filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    updated_before = filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="lte")
    ordering = filters.OrderingFilter(
        fields=["name", "sku", "stock", "price", "created_at", "updated_at", "id"]
    )

    class Meta:
        model = Widget
        fields = ["search", "category", "is_active", "low_stock"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(
            Q(sku__icontains=value) | Q(name__icontains=value) | Q(description__icontains=value)
        )

    def filter_category(self, queryset, name, value):
        if value.isascii() and value.isdigit():
            return queryset.filter(category_id=int(value))
        return queryset.filter(category__slug=value)

    def filter_low_stock(self, queryset, name, value):
        low = Q(stock__lte=F("reorder_level"))
        return queryset.filter(low if value else ~low)


class StockMovementFilter(filters.FilterSet):
    # A number, not a model choice: a <select> of every widget would not scale.
    widget = IntegerFilter(field_name="widget_id")
    reason = filters.ChoiceFilter(choices=StockMovement.Reason.choices)
    created_by = filters.CharFilter(field_name="created_by__username", label="Created by (username)")
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lte")

    class Meta:
        model = StockMovement
        fields = ["widget", "reason", "created_by"]


class ChangeLogFilter(filters.FilterSet):
    object_type = filters.ChoiceFilter(choices=ChangeLogEntry.ObjectType.choices)
    object_id = IntegerFilter(field_name="object_id")
    user = filters.CharFilter(field_name="user__username", label="Changed by (username)")
    since = filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="gte", label="At or after (ISO 8601)")

    class Meta:
        model = ChangeLogEntry
        fields = ["object_type", "object_id", "user", "since"]
