"""
Every write that carries a business rule: stock changes and the widget/category
life cycle. The API, the admin and the management commands all call these
functions, so each rule lives in exactly one place.

Stock is changed only by ``adjust_stock`` (and ``create_widget`` for the initial
stock): the widget row is locked with SELECT ... FOR UPDATE, the new level checked,
the widget updated and the movement appended, all in one transaction. On
PostgreSQL concurrent adjustments of one widget therefore queue on the row lock and
can neither oversell nor lose an update; SQLite serialises writers by itself.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, ProtectedError
from django.utils import timezone

from .models import Category, ChangeLogEntry, StockMovement, Widget

# The stock column is a 32-bit integer on every backend.
MAX_STOCK = 2_147_483_647


class InventoryError(Exception):
    """A request that conflicts with the current state of the inventory."""

    code = "conflict"

    def __init__(self, detail: str, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InsufficientStock(InventoryError):
    code = "insufficient_stock"


class StockLimitExceeded(InventoryError):
    code = "stock_limit_exceeded"


class WidgetHasHistory(InventoryError):
    code = "widget_has_history"


class CategoryInUse(InventoryError):
    code = "category_in_use"


class DuplicateSku(Exception):
    """Another widget already holds this SKU (raised when a concurrent create wins)."""


# --- Stock ------------------------------------------------------------------------------


@transaction.atomic
def adjust_stock(
    *, widget_id: int, delta: int, reason: str, note: str = "", user=None
) -> StockMovement:
    """Add ``delta`` to a widget's stock and record it in the ledger.

    Raises ``Widget.DoesNotExist``, ``InsufficientStock`` (nothing written) or
    ``StockLimitExceeded``. Returns the new movement, with ``movement.widget`` the
    updated widget.
    """
    if delta == 0:
        raise ValueError("delta must not be zero")
    if reason == StockMovement.Reason.INITIAL:
        raise ValueError("'initial' movements are only written when a widget is created")

    # The row lock closes the read-check-write race between concurrent adjustments.
    widget = Widget.objects.select_for_update().get(pk=widget_id)
    new_stock = widget.stock + delta
    if new_stock < 0:
        raise InsufficientStock(
            f"Insufficient stock: {widget.stock} available, {-delta} requested.",
            available=widget.stock,
        )
    if new_stock > MAX_STOCK:
        raise StockLimitExceeded(
            f"Stock would exceed the maximum of {MAX_STOCK}.", available=widget.stock
        )

    now = timezone.now()
    Widget.objects.filter(pk=widget.pk).update(
        stock=new_stock, version=F("version") + 1, updated_at=now
    )
    widget.stock, widget.version, widget.updated_at = new_stock, widget.version + 1, now
    return StockMovement.objects.create(
        widget=widget,
        delta=delta,
        reason=reason,
        note=note,
        stock_after=new_stock,
        created_by=user,
    )


# --- Widgets --------------------------------------------------------------------------------


def _auto_sku(pk: int) -> str:
    sku = f"WGT-{pk:06d}"
    suffix = 1
    # A hand-picked SKU may already look like an automatic one; step past it.
    while Widget.objects.filter(sku=sku).exists():
        sku = f"WGT-{pk:06d}-{suffix}"
        suffix += 1
    return sku


@transaction.atomic
def create_widget(*, user=None, stock: int = 0, sku: str | None = None, **fields: Any) -> Widget:
    """Create a widget; a positive ``stock`` is recorded as its ``initial`` movement."""
    if stock < 0 or stock > MAX_STOCK:
        raise ValueError("initial stock out of range")
    widget = Widget(sku=sku or f"NEW-{uuid.uuid4().hex[:28]}".upper(), stock=stock, **fields)
    try:
        with transaction.atomic():
            widget.save()
    except IntegrityError as exc:
        if sku and Widget.objects.filter(sku=sku).exists():
            raise DuplicateSku(sku) from exc
        raise
    if not sku:
        widget.sku = _auto_sku(widget.pk)
        Widget.objects.filter(pk=widget.pk).update(sku=widget.sku)
    if stock:
        StockMovement.objects.create(
            widget=widget,
            delta=stock,
            reason=StockMovement.Reason.INITIAL,
            stock_after=stock,
            created_by=user,
        )
    _log_change(user, ChangeLogEntry.Action.CREATE, widget, before={}, after=_audited_values(widget))
    return widget


@transaction.atomic
def update_widget(*, widget: Widget, changes: Mapping[str, Any], user=None) -> Widget:
    """Change a widget's descriptive fields. Stock is not among them: see ``adjust_stock``."""
    if "stock" in changes:
        raise ValueError("stock changes go through adjust_stock")
    # The old values as committed, under the row lock: a concurrent edit is not misreported.
    before = _audited_values(Widget.objects.select_for_update().get(pk=widget.pk))
    for field, value in changes.items():
        setattr(widget, field, value)
    widget.version = F("version") + 1
    try:
        with transaction.atomic():
            widget.save()
    except IntegrityError as exc:
        if "sku" in changes and Widget.objects.exclude(pk=widget.pk).filter(sku=widget.sku).exists():
            raise DuplicateSku(widget.sku) from exc
        raise
    widget.refresh_from_db(fields=["version", "stock", "updated_at"])
    _log_change(user, ChangeLogEntry.Action.UPDATE, widget, before=before, after=_audited_values(widget))
    return widget


@transaction.atomic
def delete_widget(*, widget: Widget, user=None) -> None:
    """Delete a widget that has no stock history; one with history is archived instead."""
    history = WidgetHasHistory(
        "This widget has stock history and cannot be deleted; "
        "archive it with is_active=false instead."
    )
    if widget.movements.exists():
        raise history
    before, pk = _audited_values(widget), widget.pk
    try:
        deleted, _ = widget.delete()
    except ProtectedError as exc:  # a movement was written since the check above
        raise history from exc
    if deleted:
        _log_change(user, ChangeLogEntry.Action.DELETE, widget, before=before, after={}, object_id=pk)


# --- Categories ------------------------------------------------------------------------------


@transaction.atomic
def create_category(*, user=None, **fields: Any) -> Category:
    category = Category(**fields)
    category.save()
    _log_change(user, ChangeLogEntry.Action.CREATE, category, before={}, after=_audited_values(category))
    return category


@transaction.atomic
def update_category(*, category: Category, changes: Mapping[str, Any], user=None) -> Category:
    before = _audited_values(Category.objects.select_for_update().get(pk=category.pk))
    for field, value in changes.items():
        setattr(category, field, value)
    category.version = F("version") + 1
    category.save()
    category.refresh_from_db(fields=["version", "slug"])
    _log_change(user, ChangeLogEntry.Action.UPDATE, category, before=before, after=_audited_values(category))
    return category


@transaction.atomic
def delete_category(*, category: Category, user=None) -> None:
    """Delete a category; one that still has widgets is refused."""
    before, pk = _audited_values(category), category.pk
    try:
        deleted, _ = category.delete()
    except ProtectedError as exc:
        raise CategoryInUse(
            "This category still has widgets; move or delete them first.",
            widgets=category.widgets.count(),
        ) from exc
    if deleted:
        _log_change(user, ChangeLogEntry.Action.DELETE, category, before=before, after={}, object_id=pk)


# --- Change log ---------------------------------------------------------------------------------
# Called inside the transaction of each write above, so an entry exists exactly when the
# change was committed. Stock adjustments write none: the ledger is their log.

AUDITED_FIELDS = {
    Widget: ["sku", "name", "description", "category", "price", "stock", "reorder_level", "is_active"],
    Category: ["name", "slug", "description"],
}
OBJECT_TYPES = {Widget: ChangeLogEntry.ObjectType.WIDGET, Category: ChangeLogEntry.ObjectType.CATEGORY}


def _audited_values(instance) -> dict[str, Any]:
    """The audited fields as JSON values: foreign keys as ids, decimals as strings."""
    values = {}
    for name in AUDITED_FIELDS[type(instance)]:
        field = instance._meta.get_field(name)
        value = field.value_from_object(instance)
        if isinstance(value, Decimal):
            value = f"{value:.{field.decimal_places}f}"
        values[name] = value
    return values


def _log_change(user, action: str, instance, *, before: dict, after: dict, object_id=None) -> None:
    changes = {
        name: [before.get(name), after.get(name)]
        for name in AUDITED_FIELDS[type(instance)]
        if before.get(name) != after.get(name)
    }
    if action == ChangeLogEntry.Action.UPDATE and not changes:
        return  # saved without changing anything: nothing to tell
    ChangeLogEntry.objects.create(
        user=user if user is not None and user.is_authenticated else None,
        action=action,
        object_type=OBJECT_TYPES[type(instance)],
        object_id=object_id or instance.pk,
        object_repr=str(instance)[:200],
        changes=changes,
    )
