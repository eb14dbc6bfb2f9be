"""
Every write that carries a business rule: stock changes and the widget/category
life cycle. The API, the admin and the management commands all call these
functions, so each rule lives in exactly one place.

Stock is changed only by ``adjust_stock`` (and ``create_widget`` for the initial
stock): the widget row is locked with SELECT ... FOR UPDATE, the new level checked,
the widget updated and the movement appended, all in one transaction. On
PostgreSQL concurrent adjustments of one widget therefore queue on the row lock and
can neither oversell nor lose an update; SQLite serialises writers by itself.

Reservations hold units for an order (see docs/reservations.md). Every service that
changes stock or what is reserved locks the widget rows first (in ascending id order,
so that two of them never deadlock), then reads what is reserved, then the clock: a
decrease of stock may take only the *available* units (stock - reserved), so units held
for someone can be neither sold nor written off, and at every commit
0 <= reserved <= stock for every widget.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, models, transaction
from django.db.models import Case, F, IntegerField, ProtectedError, Sum, Value, When
from django.utils import timezone

from webhooks.models import EventType
from webhooks.services import Outbox

from . import credentials
from .models import (
    Category,
    ChangeLogEntry,
    IdempotencyKey,
    Reservation,
    ReservationItem,
    StockMovement,
    Widget,
)
from .prepared import prepared

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


class VersionMismatch(Exception):
    """The object is no longer at the version the caller expected; nothing was written."""

    def __init__(self, current_version: int):
        super().__init__(f"current version is {current_version}")
        self.current_version = current_version


def _check_version(obj, expected_version: int | Collection[int] | None) -> None:
    """Optimistic concurrency: call with ``obj`` locked, before writing it.

    ``None`` means no precondition; otherwise the current version must be ``expected_version``
    (or one of them, for a collection: an HTTP If-Match list).
    """
    if expected_version is None:
        return
    allowed = {expected_version} if isinstance(expected_version, int) else set(expected_version)
    if obj.version not in allowed:
        raise VersionMismatch(obj.version)


# --- Stock ------------------------------------------------------------------------------

Reason = StockMovement.Reason
# The sign of the delta each reason allows: +1 adds stock, -1 removes it, 0 either way.
REASON_SIGNS = {
    Reason.INITIAL: +1,
    Reason.RECEIVED: +1,
    Reason.RETURNED: +1,
    Reason.SOLD: -1,
    Reason.DAMAGED: -1,
    Reason.CORRECTION: 0,
}


class InvalidMovement(ValueError):
    """A movement no door may write: ``field`` (delta or reason) says which part is wrong."""

    code = "invalid"

    def __init__(self, detail: str, *, field: str):
        super().__init__(detail)
        self.detail = detail
        self.field = field


def check_movement(*, delta: int, reason: str, initial: bool = False) -> None:
    """The rule every movement obeys: a non-zero delta whose sign its reason allows
    (received and returned add stock, sold and damaged remove it, a correction goes either
    way), and ``initial`` only when a widget is created (``initial=True``). Raises
    ``InvalidMovement``. Called by every write below; the doors may call it first to
    answer before touching the database."""
    if reason not in REASON_SIGNS:
        raise InvalidMovement(f"'{reason}' is not a valid reason", field="reason")
    if (reason == Reason.INITIAL) != initial:
        if initial:
            raise InvalidMovement("a widget's first stock is an 'initial' movement", field="reason")
        raise InvalidMovement("'initial' movements are only written when a widget is created", field="reason")
    if delta == 0:
        raise InvalidMovement("delta must not be zero", field="delta")
    sign = REASON_SIGNS[reason]
    if sign > 0 and delta < 0:
        raise InvalidMovement(f"'{reason}' adds stock: delta must be positive", field="delta")
    if sign < 0 and delta > 0:
        raise InvalidMovement(f"'{reason}' removes stock: delta must be negative", field="delta")


# The one-statement writes (docs/performance.md): PostgreSQL only, and a switch the tests
# turn off to compare their answers with the locked path's.
FAST_WRITES = True


def fast_writes() -> bool:
    """Whether stock changes try the one-statement path first: the only place that decides."""
    return FAST_WRITES and connection.vendor == "postgresql"


class _FastPathMissed(Exception):
    """The one-statement write changed fewer rows than it should: roll it back, lock instead."""


def adjust_stock(*, widget_id: int, delta: int, reason: str, note: str = "", user=None) -> StockMovement:
    """Add ``delta`` to a widget's stock and record it in the ledger.

    Raises ``InvalidMovement`` (see ``check_movement``), ``Widget.DoesNotExist``,
    ``InsufficientStock`` (nothing written) or ``StockLimitExceeded``. Returns the new
    movement, with ``movement.widget`` the updated widget.

    On PostgreSQL the change is first tried as one statement (``_adjust_stock_fast``); when
    that changes nothing (no such widget, not enough units by ``held``, over the maximum)
    the locked path below decides, with the exact reserved units by the clock.
    """
    check_movement(delta=delta, reason=reason)
    if fast_writes():
        movement = _adjust_stock_fast(widget_id=widget_id, delta=delta, reason=reason, note=note, user=user)
        if movement is not None:
            return movement
    return _adjust_stock_locked(widget_id=widget_id, delta=delta, reason=reason, note=note, user=user)


def _widget_columns() -> list:
    return [field for field in Widget._meta.concrete_fields]


def _reserved_sql(widget_ref: str) -> str:
    """The units of widget ``widget_ref`` held at the ``%(now)s`` parameter, as
    ``ReservedUnits`` computes them; skipped (0) when ``held`` is 0, as then nothing can be."""
    item, reservation = ReservationItem._meta.db_table, Reservation._meta.db_table
    return (
        f"CASE WHEN {widget_ref}.held = 0 THEN 0 ELSE COALESCE((SELECT SUM(i.quantity) FROM {item} i"
        f" INNER JOIN {reservation} r ON r.id = i.reservation_id WHERE i.widget_id = {widget_ref}.id"
        f" AND r.status = 'active' AND r.expires_at > %(now)s), 0) END"
    )


def _widget_from_row(columns, row) -> Widget:
    return Widget.from_db(connection.alias, [c.attname for c in columns], row[: len(columns)])


def _written(instance: models.Model) -> models.Model:
    """Mark ``instance``, built from what a one-statement write returned, as saved (as
    ``from_db`` would): a later ``save()`` updates its row instead of inserting one."""
    instance._state.adding, instance._state.db = False, connection.alias
    return instance


def _adjust_stock_fast(*, widget_id: int, delta: int, reason: str, note: str, user) -> StockMovement | None:
    """The adjustment as one statement: an UPDATE whose WHERE checks the new level against
    ``held`` (a decrease) or the maximum (an increase), feeding the movement's INSERT.
    Returns None, having written nothing, when it updated no row.

    Race-free by itself: ``held`` is on the widget row and changes only under its lock, and
    PostgreSQL re-checks the WHERE on the newest row version after waiting for the lock.
    ``held`` counts expired holds until recorded, so it may refuse what the clock allows;
    the locked path then decides. Without subscribers (and outside a transaction) nothing
    else is written, so the statement runs in autocommit: one round trip. Otherwise it runs
    in the caller's transaction (or one of its own) with the events, and the units reserved
    are read again under the lock when the widget has any held.
    """
    try:
        widget_id = int(widget_id)
    except (TypeError, ValueError):
        return None
    if not 0 < widget_id < 2**63:
        return None  # the locked path answers for ids no row can have
    outbox = Outbox()
    columns = _widget_columns()
    table, movements = Widget._meta.db_table, StockMovement._meta.db_table
    check = "stock - held >= %(need)s" if delta < 0 else "stock <= %(limit)s"
    now = timezone.now()
    sql = (
        f"WITH w AS (UPDATE {table} SET stock = stock + %(delta)s, version = version + 1, updated_at = %(now)s"
        f" WHERE id = %(id)s AND {check}"
        f" RETURNING {', '.join(c.column for c in columns)}, {_reserved_sql(table)} AS reserved),"
        f" m AS (INSERT INTO {movements} (widget_id, delta, reason, note, stock_after, created_by_id, created_at)"
        f" SELECT id, %(delta)s, %(reason)s, %(note)s, stock, %(user)s::integer, %(now)s FROM w RETURNING id)"
        f" SELECT w.*, m.id FROM w, m"
    )
    params = {
        "delta": delta,
        "now": now,
        "id": widget_id,
        "need": -delta,
        "limit": MAX_STOCK - delta,
        "reason": reason,
        "note": note,
        "user": user.pk if user is not None and user.pk is not None else None,
    }
    atomic = outbox.subscriptions or connection.in_atomic_block
    # No savepoint inside the caller's transaction: a statement that updates nothing writes
    # nothing, and an error propagates (and rolls the caller back) either way.
    with transaction.atomic(savepoint=False) if atomic else _no_transaction():
        with connection.cursor() as cursor:
            cursor.execute(*prepared(connection, sql, params))
            row = cursor.fetchone()
        if row is None:
            return None
        widget = _widget_from_row(columns, row)
        widget.reserved = row[len(columns)]
        if atomic and widget.held:
            _read_reserved([widget])  # a fresh snapshot and clock, under the lock we now hold
        movement = StockMovement(
            id=row[-1],
            widget=widget,
            delta=delta,
            reason=reason,
            note=note,
            stock_after=widget.stock,
            created_by=user if params["user"] is not None else None,
            created_at=now,
        )
        _written(movement)
        level_before = (alert_level(widget, stock=widget.stock - delta), widget.reorder_level)
        _stock_events(outbox, movement, widget, level_before)
        outbox.flush()
    return movement


class _no_transaction:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@transaction.atomic
def _adjust_stock_locked(*, widget_id: int, delta: int, reason: str, note: str = "", user=None) -> StockMovement:
    # The row lock closes the read-check-write race between concurrent adjustments.
    widget = Widget.objects.select_for_update().get(pk=widget_id)
    _read_reserved([widget])
    new_stock = widget.stock + delta
    # Receiving is never blocked; a decrease may take only the units not reserved.
    if delta < 0 and new_stock < widget.reserved:
        raise InsufficientStock(
            f"Insufficient stock: {widget.available} available, {-delta} requested.",
            available=widget.available,
        )
    if new_stock > MAX_STOCK:
        raise StockLimitExceeded(f"Stock would exceed the maximum of {MAX_STOCK}.", available=widget.available)

    now = timezone.now()
    level_before = (alert_level(widget), widget.reorder_level)
    Widget.objects.filter(pk=widget.pk).update(stock=new_stock, version=F("version") + 1, updated_at=now)
    widget.stock, widget.version, widget.updated_at = new_stock, widget.version + 1, now
    movement = StockMovement.objects.create(
        widget=widget,
        delta=delta,
        reason=reason,
        note=note,
        stock_after=new_stock,
        created_by=user,
    )
    outbox = Outbox()
    _stock_events(outbox, movement, widget, level_before)
    outbox.flush()
    return movement


class BatchItemError(Exception):
    """Item ``index`` (0-based) of a batch failed, for the reason in ``error``: an
    ``InventoryError`` for a conflict with the stock, a ``ValueError`` for a bad item.
    Nothing of the batch was applied."""

    def __init__(self, index: int, error: Exception):
        super().__init__(f"item {index}: {error}")
        self.index = index
        self.error = error


class UnknownWidget(ValueError):
    code = "unknown_widget"


MAX_BATCH_ITEMS = 500


def adjust_stock_batch(*, items: Sequence[Mapping[str, Any]], user=None) -> list[StockMovement]:
    """Apply several adjustments (``widget``, ``delta``, ``reason``, ``note``) all or nothing.

    Items apply in the given order, and one widget may appear several times. Raises
    ``BatchItemError`` naming the first failing item; then nothing is written. Returns
    the movements in item order.

    On PostgreSQL the batch is first tried as one statement (``_adjust_stock_batch_fast``);
    when it would update fewer widgets than the batch names, it is rolled back and the
    locked path below finds the failing item.
    """
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise ValueError(f"a batch has 1 to {MAX_BATCH_ITEMS} items")
    for index, item in enumerate(items):
        try:
            check_movement(delta=item["delta"], reason=item["reason"])
        except InvalidMovement as exc:
            raise BatchItemError(index, exc) from None
    if fast_writes():
        try:
            with transaction.atomic():
                return _adjust_stock_batch_fast(items=items, user=user)
        except _FastPathMissed:
            pass
    return _adjust_stock_batch_locked(items=items, user=user)


def _adjust_stock_batch_fast(*, items: Sequence[Mapping[str, Any]], user) -> list[StockMovement]:
    """The batch as one statement, in the caller's transaction: one UPDATE of every widget
    it names (each by its net delta, checked at every item against ``held`` or the maximum,
    see ``_adjust_stock_fast``) feeding one INSERT of the movements. The widgets are locked
    in ascending id order by the statement's own ``SELECT ... FOR UPDATE``, so two batches
    never deadlock. Raises ``_FastPathMissed`` when a widget was not updated (unknown, or a
    check failed): the caller rolls it all back."""
    # Per widget: the net delta, the most a decrease item needs above held (stock - held >=
    # need), and the highest stock an increase item allows (stock <= limit).
    per_widget: dict[int, list[int]] = {}
    rows = []
    for ordinal, item in enumerate(items):
        pk = item["widget"]
        if not 0 < pk < 2**63:
            raise _FastPathMissed()
        net, need, limit = per_widget.setdefault(pk, [0, -(2**62), MAX_STOCK])
        net += item["delta"]
        if item["delta"] < 0:
            need = max(need, -net)
        else:
            limit = min(limit, MAX_STOCK - net)
        per_widget[pk] = [net, need, limit]
        rows.append((ordinal, pk, item["delta"], item["reason"], item.get("note", ""), net))
    outbox = Outbox()
    columns = _widget_columns()
    table, movements_table = Widget._meta.db_table, StockMovement._meta.db_table
    now = timezone.now()
    user_id = user.pk if user is not None and user.pk is not None else None
    widget_values = ", ".join(["(%s::bigint, %s::bigint, %s::bigint, %s::bigint)"] * len(per_widget))
    item_values = ", ".join(
        ["(%s::integer, %s::bigint, %s::integer, %s::varchar, %s::varchar, %s::bigint)"] * len(rows)
    )
    sql = (
        f"WITH v (id, net, need, lim) AS (VALUES {widget_values}),"
        f" items (ordinal, widget, delta, reason, note, prefix) AS (VALUES {item_values}),"
        f" w AS (UPDATE {table} t SET stock = t.stock + v.net, version = t.version + 1, updated_at = %s"
        f" FROM (SELECT id FROM {table} WHERE id IN (SELECT id FROM v) ORDER BY id FOR UPDATE) locked, v"
        f" WHERE t.id = locked.id AND t.id = v.id AND t.stock - t.held >= v.need AND t.stock <= v.lim"
        f" RETURNING {', '.join('t.' + c.column for c in columns)}, v.net),"
        f" m AS (INSERT INTO {movements_table}"
        f" (widget_id, delta, reason, note, stock_after, created_by_id, created_at)"
        f" SELECT items.widget, items.delta, items.reason, items.note, w.stock - w.net + items.prefix, %s::integer,"
        f" %s::timestamptz"
        f" FROM items INNER JOIN w ON w.id = items.widget ORDER BY items.ordinal RETURNING id)"
        f" SELECT w.*, (SELECT array_agg(id ORDER BY id) FROM m) FROM w"
    )
    params: list[Any] = [value for pk, values in per_widget.items() for value in (pk, *values)]
    params += [value for row in rows for value in row]
    params += [now, user_id, now]
    with connection.cursor() as cursor:
        cursor.execute(*prepared(connection, sql, params))
        result = cursor.fetchall()
    if len(result) != len(per_widget):
        raise _FastPathMissed()
    widgets = {}
    for row in result:
        widget = _widget_from_row(columns, row)
        widget.reserved = 0
        widgets[widget.pk] = widget
    movement_ids = result[0][-1]
    held = [widget for widget in widgets.values() if widget.held]
    if held and outbox.subscriptions:
        _read_reserved(held)  # under the locks the statement took: for the stock alerts
    created_by = user if user_id is not None else None
    movements = []
    for (_ordinal, pk, delta, reason, note, prefix), movement_id in zip(rows, movement_ids, strict=True):
        widget = widgets[pk]
        movement = StockMovement(
            id=movement_id,
            widget=widget,
            delta=delta,
            reason=reason,
            note=note,
            stock_after=widget.stock - per_widget[pk][0] + prefix,
            created_by=created_by,
            created_at=now,
        )
        _written(movement)
        movements.append(movement)
    for movement in movements:
        widget = movement.widget
        level_before = (alert_level(widget, stock=movement.stock_after - movement.delta), widget.reorder_level)
        _stock_events(outbox, movement, widget, level_before)
    outbox.flush()
    return movements


@transaction.atomic
def _adjust_stock_batch_locked(*, items: Sequence[Mapping[str, Any]], user=None) -> list[StockMovement]:
    # Rows are locked in ascending id order, whatever order the items name them in: two
    # batches over overlapping widgets then queue on their first shared row instead of
    # each holding a row the other waits for (a deadlock).
    ids = sorted({item["widget"] for item in items})
    widgets = _lock_widgets(ids)

    now = timezone.now()
    movements = []
    levels_before = []
    for index, item in enumerate(items):
        widget = widgets.get(item["widget"])
        if widget is None:
            raise BatchItemError(index, UnknownWidget(f"widget {item['widget']} does not exist"))
        new_stock = widget.stock + item["delta"]
        if item["delta"] < 0 and new_stock < widget.reserved:
            raise BatchItemError(
                index,
                InsufficientStock(
                    f"Insufficient stock of widget {widget.pk}: {widget.available} available, "
                    f"{-item['delta']} requested.",
                    available=widget.available,
                ),
            )
        if new_stock > MAX_STOCK:
            raise BatchItemError(
                index,
                StockLimitExceeded(
                    f"Stock of widget {widget.pk} would exceed the maximum of {MAX_STOCK}.",
                    available=widget.available,
                ),
            )
        level_before = (alert_level(widget), widget.reorder_level)
        widget.stock = new_stock
        levels_before.append(level_before)
        movements.append(
            StockMovement(
                widget=widget,
                delta=item["delta"],
                reason=item["reason"],
                note=item.get("note", ""),
                stock_after=new_stock,
                created_by=user,
            )
        )

    # Every check passed: one UPDATE for the widgets, one INSERT for the ledger.
    _write_stock([widgets[pk] for pk in ids], now)
    movements = StockMovement.objects.bulk_create(movements)
    outbox = Outbox()
    for movement, level_before in zip(movements, levels_before):
        _stock_events(outbox, movement, movement.widget, level_before)
    outbox.flush()
    return movements


# --- Reservations ---------------------------------------------------------------------------

MAX_RESERVATION_ITEMS = 100
MIN_TTL_SECONDS, MAX_TTL_SECONDS, DEFAULT_TTL_SECONDS = 60, 86_400, 900


class ReservationExpired(InventoryError):
    code = "reservation_expired"


class ReservationNotActive(InventoryError):
    code = "reservation_not_active"


def _read_reserved(widgets: Collection[Widget], now=None) -> None:
    """Set ``reserved`` on each of ``widgets``, which the caller has locked.

    Its own statement, after the lock: on PostgreSQL (READ COMMITTED) every statement
    reads a fresh snapshot, so this sees whatever the transaction that held the lock
    before us committed. Computed inside the locking SELECT, it would read the snapshot
    taken before the wait, and miss a reservation made meanwhile.
    """
    held = dict(
        ReservationItem.objects.holding(now=now or timezone.now())
        .filter(widget_id__in=[w.pk for w in widgets])
        .order_by()
        .values("widget_id")
        .annotate(total=Sum("quantity"))
        .values_list("widget_id", "total")
    )
    for widget in widgets:
        widget.reserved = held.get(widget.pk, 0)


def _lock_widgets(ids: Collection[int]) -> dict[int, Widget]:
    """Lock the widgets ``ids`` (SELECT ... FOR UPDATE) in ascending id order, whatever
    order the caller names them in: two writers over overlapping widgets then queue on
    their first shared row instead of each holding a row the other waits for (a
    deadlock). Returns them by id, with ``reserved`` read after the lock."""
    widgets = {w.pk: w for w in Widget.objects.select_for_update().filter(pk__in=sorted(ids)).order_by("pk")}
    _read_reserved(widgets.values())
    return widgets


def _check_ttl(ttl_seconds: int) -> None:
    if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}")


def create_reservation(
    *,
    reference: str,
    items: Sequence[Mapping[str, Any]],
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    user=None,
) -> Reservation:
    """Hold ``quantity`` units of each item's ``widget`` for ``ttl_seconds``, all or nothing.

    Each widget may appear once. Raises ``ValueError`` (a bad argument) or
    ``BatchItemError`` naming the first item that names no widget (``UnknownWidget``)
    or asks for more than is available (``InsufficientStock`` with ``widget`` and
    ``available``); then nothing is held. Returns the reservation, its items prefetched.

    On PostgreSQL it is first tried as one statement (``_create_reservation_fast``); when
    that cannot hold every item, it is rolled back and the locked path decides.
    """
    if not 1 <= len(items) <= MAX_RESERVATION_ITEMS:
        raise ValueError(f"a reservation has 1 to {MAX_RESERVATION_ITEMS} items")
    _check_ttl(ttl_seconds)
    seen = set()
    for index, item in enumerate(items):
        if item["quantity"] < 1:
            raise BatchItemError(index, ValueError("quantity must be at least 1"))
        if item["widget"] in seen:
            raise BatchItemError(index, ValueError(f"widget {item['widget']} appears more than once"))
        seen.add(item["widget"])
    created_by = user if user is not None and user.is_authenticated else None
    if fast_writes():
        try:
            with transaction.atomic():
                return _create_reservation_fast(reference, items, ttl_seconds, created_by, user)
        except _FastPathMissed:
            pass
    return _create_reservation_locked(reference, items, ttl_seconds, created_by, user)


def _create_reservation_fast(reference, items, ttl_seconds, created_by, user) -> Reservation:
    """The reservation as one statement, in the caller's transaction: one UPDATE adds each
    item to its widget's ``held`` where ``stock - held`` covers it (the widgets locked in
    ascending id order, as in ``_adjust_stock_batch_fast``), feeding the INSERTs of the
    reservation and its items, which run only when every widget was updated. ``held``
    counts expired holds until recorded, so it may refuse what the clock allows; raises
    ``_FastPathMissed`` then (or for an unknown widget), and the caller rolls back."""
    if not all(0 < item["widget"] < 2**63 for item in items):
        raise _FastPathMissed()
    columns = _widget_columns()
    table, item_table = Widget._meta.db_table, ReservationItem._meta.db_table
    now = timezone.now()
    expires_at = now + timedelta(seconds=ttl_seconds)
    item_values = ", ".join(["(%s::bigint, %s::integer, %s::integer)"] * len(items))
    sql = (
        f"WITH v (widget, quantity, ordinal) AS (VALUES {item_values}),"
        f" w AS (UPDATE {table} t SET held = t.held + v.quantity"
        f" FROM (SELECT id FROM {table} WHERE id IN (SELECT widget FROM v) ORDER BY id FOR UPDATE) locked, v"
        f" WHERE t.id = locked.id AND t.id = v.widget AND t.stock - t.held >= v.quantity"
        f" RETURNING {', '.join('t.' + c.column for c in columns)}),"
        f" r AS (INSERT INTO {Reservation._meta.db_table} (reference, status, created_by_id, created_at, expires_at)"
        f" SELECT %s::varchar, 'active', %s::integer, %s::timestamptz, %s::timestamptz"
        f" WHERE (SELECT count(*) FROM w) = %s::integer RETURNING id),"
        f" i AS (INSERT INTO {item_table} (reservation_id, widget_id, quantity)"
        f" SELECT r.id, v.widget, v.quantity FROM r, v ORDER BY v.ordinal RETURNING id)"
        f" SELECT w.*, (SELECT id FROM r), (SELECT array_agg(id ORDER BY id) FROM i) FROM w"
    )
    params: list[Any] = [
        value for ordinal, item in enumerate(items) for value in (item["widget"], item["quantity"], ordinal)
    ]
    params += [reference, created_by.pk if created_by is not None else None, now, expires_at, len(items)]
    with connection.cursor() as cursor:
        cursor.execute(*prepared(connection, sql, params))
        result = cursor.fetchall()
    if len(result) != len(items):
        raise _FastPathMissed()
    widgets = {widget.pk: widget for widget in (_widget_from_row(columns, row) for row in result)}
    reservation_id, item_ids = result[0][-2], result[0][-1]
    reservation = Reservation(
        id=reservation_id, reference=reference, created_by=created_by, created_at=now, expires_at=expires_at
    )
    _written(reservation)
    reservation_items = []
    for item_id, item in zip(item_ids, items, strict=True):
        reservation_item = ReservationItem(
            id=item_id, reservation=reservation, widget_id=item["widget"], quantity=item["quantity"]
        )
        _written(reservation_item)
        reservation_items.append(reservation_item)
    _prefetched(reservation, reservation_items)
    _log_reservation(user, ChangeLogEntry.Action.CREATE, reservation, before={})
    levels_before = {}
    outbox = Outbox()
    if outbox.subscriptions:
        # Read under the locks the statement took, this reservation included: for the alerts.
        _read_reserved(widgets.values(), now)
        for item in items:
            widget = widgets[item["widget"]]
            levels_before[widget.pk] = (alert_level(widget) + item["quantity"], widget.reorder_level)
    _reservation_events(EventType.RESERVATION_CREATED, reservation, widgets, levels_before, outbox=outbox)
    return reservation


@transaction.atomic
def _create_reservation_locked(reference, items, ttl_seconds, created_by, user) -> Reservation:
    widgets = _lock_widgets({item["widget"] for item in items})
    now = timezone.now()  # read after the locks: see _read_reserved
    for index, item in enumerate(items):
        widget = widgets.get(item["widget"])
        if widget is None:
            raise BatchItemError(index, UnknownWidget(f"widget {item['widget']} does not exist"))
        if item["quantity"] > widget.available:
            raise BatchItemError(
                index,
                InsufficientStock(
                    f"Insufficient stock of widget {widget.pk}: {widget.available} available, "
                    f"{item['quantity']} requested.",
                    widget=widget.pk,
                    available=widget.available,
                ),
            )

    reservation = Reservation.objects.create(
        reference=reference, created_by=created_by, created_at=now, expires_at=now + timedelta(seconds=ttl_seconds)
    )
    reservation_items = ReservationItem.objects.bulk_create(
        ReservationItem(reservation=reservation, widget_id=item["widget"], quantity=item["quantity"]) for item in items
    )
    levels_before = {pk: (alert_level(widget), widget.reorder_level) for pk, widget in widgets.items()}
    for item in reservation_items:
        widgets[item.widget_id].reserved += item.quantity
        widgets[item.widget_id].held += item.quantity
    _write_held(widgets.values())
    _prefetched(reservation, reservation_items)
    # Complete: the units are held (and in the change log) once this transaction commits.
    _log_reservation(user, ChangeLogEntry.Action.CREATE, reservation, before={})
    _reservation_events(EventType.RESERVATION_CREATED, reservation, widgets, levels_before)
    return reservation


def _lock_reservation(reservation_id: int) -> tuple[Reservation, list[ReservationItem]]:
    """Lock the reservation and read its items. Callers then lock its widgets: the
    reservation before the widgets, always (and nothing locks a widget and then a
    reservation), so the services never wait on each other in a circle. Raises
    ``Reservation.DoesNotExist``."""
    # ``of=("self",)``: the creator is read along (the answer shows it), not locked.
    reservation = (
        Reservation.objects.select_for_update(of=("self",)).select_related("created_by").get(pk=reservation_id)
    )
    items = list(reservation.items.all())
    return reservation, items


def _must_be_active(reservation: Reservation, now, doing: str) -> None:
    if reservation.status == Reservation.Status.EXPIRED:  # its expiry recorded by the sweep
        raise ReservationExpired(
            f"Reservation {reservation.pk} expired at {reservation.expires_at.isoformat()}; "
            f"it holds nothing and cannot be {doing}.",
            status=Reservation.EXPIRED,
        )
    if reservation.status != Reservation.Status.ACTIVE:
        raise ReservationNotActive(
            f"Reservation {reservation.pk} is {reservation.status}; only an active one can be {doing}.",
            status=reservation.status,
        )
    if reservation.expires_at <= now:
        raise ReservationExpired(
            f"Reservation {reservation.pk} expired at {reservation.expires_at.isoformat()}; "
            f"it holds nothing and cannot be {doing}.",
            status=Reservation.EXPIRED,
        )


def commit_reservation(*, reservation_id: int, user=None) -> tuple[Reservation, list[StockMovement]]:
    """Sell what an active reservation holds: one ``sold`` movement per item (the
    reservation's reference in its note) and the reservation ``committed``, in one
    transaction. The units were held, so available stock does not change.

    Raises ``Reservation.DoesNotExist``, ``ReservationExpired`` or ``ReservationNotActive``
    (nothing written). Returns the reservation and the movements in item order.

    On PostgreSQL it is first tried as one statement (``_commit_reservation_fast``); when
    that commits nothing, it is rolled back and the locked path decides (and explains).
    """
    if fast_writes():
        try:
            with transaction.atomic():
                return _commit_reservation_fast(reservation_id, user)
        except _FastPathMissed:
            pass
    return _commit_reservation_locked(reservation_id, user)


def _commit_reservation_fast(reservation_id, user) -> tuple[Reservation, list[StockMovement]]:
    """The commit as one statement, in the caller's transaction: the reservation stored as
    ``committed`` if it is active and unexpired by the clock read before the statement,
    its items taken off each widget's stock and ``held`` (the widgets locked in ascending
    id order, reservation row first, as everywhere), and the ``sold`` movements inserted.

    A widget is only updated while ``stock >= held``: every unit held is still in stock.
    An adjustment that read this reservation as expired by a later clock than ours, while
    we waited for its lock, may have sold units it held; then that check fails. Raises
    ``_FastPathMissed`` when the reservation or any widget was not updated (no such
    reservation, not active, expired, or that check): the caller rolls back.
    """
    try:
        reservation_id = int(reservation_id)
    except (TypeError, ValueError):
        raise _FastPathMissed() from None
    if not 0 < reservation_id < 2**63:
        raise _FastPathMissed()
    columns = _widget_columns()
    table, item_table = Widget._meta.db_table, ReservationItem._meta.db_table
    movements_table = StockMovement._meta.db_table
    now = timezone.now()
    sql = (
        f"WITH r AS (UPDATE {Reservation._meta.db_table} SET status = 'committed', closed_at = %(now)s"
        f" WHERE id = %(id)s AND status = 'active' AND expires_at > %(now)s"
        f" RETURNING id, reference, created_by_id, created_at, expires_at),"
        f" items AS (SELECT id, widget_id, quantity FROM {item_table} WHERE reservation_id IN (SELECT id FROM r)),"
        f" w AS (UPDATE {table} t SET stock = t.stock - items.quantity, held = t.held - items.quantity,"
        f" version = t.version + 1, updated_at = %(now)s"
        f" FROM (SELECT id FROM {table} WHERE id IN (SELECT widget_id FROM items) ORDER BY id FOR UPDATE) locked,"
        f" items WHERE t.id = locked.id AND t.id = items.widget_id AND t.stock >= t.held"
        f" RETURNING {', '.join('t.' + c.column for c in columns)}, items.id AS item_id, items.quantity),"
        f" m AS (INSERT INTO {movements_table} (widget_id, delta, reason, note, stock_after, created_by_id, created_at)"
        f" SELECT w.id, -w.quantity, 'sold', left('Reservation ' || r.id || ': ' || r.reference, 255), w.stock,"
        f" %(user)s::integer, %(now)s FROM w, r ORDER BY w.item_id RETURNING id, widget_id)"
        f" SELECT r.reference, r.created_by_id, r.created_at, r.expires_at, (SELECT count(*) FROM items), w.*, m.id"
        f" FROM r, w, m WHERE m.widget_id = w.id ORDER BY w.item_id"
    )
    user_id = user.pk if user is not None and user.is_authenticated else None
    with connection.cursor() as cursor:
        cursor.execute(*prepared(connection, sql, {"id": reservation_id, "now": now, "user": user_id}))
        result = cursor.fetchall()
    if not result or len(result) != result[0][4]:
        raise _FastPathMissed()
    reference, created_by_id, created_at, expires_at = result[0][:4]
    reservation = Reservation(
        id=reservation_id,
        reference=reference,
        created_by_id=created_by_id,
        created_at=created_at,
        expires_at=expires_at,
    )
    _written(reservation)
    if user_id is not None and created_by_id == user_id:
        reservation.created_by = user  # the usual case; otherwise read when shown
    widgets, items, movements = {}, [], []
    note = f"Reservation {reservation_id}: {reference}"[:255]
    for row in result:
        widget = _widget_from_row(columns, row[5:])
        widget.reserved = 0
        widgets[widget.pk] = widget
        item_id, quantity, movement_id = row[-3:]
        item = ReservationItem(id=item_id, widget_id=widget.pk, quantity=quantity)
        _written(item)
        items.append(item)
        movement = StockMovement(
            id=movement_id,
            widget=widget,
            delta=-quantity,
            reason=StockMovement.Reason.SOLD,
            note=note,
            stock_after=widget.stock,
            created_by=user if user_id is not None else None,
            created_at=now,
        )
        _written(movement)
        movements.append(movement)
    before = _reservation_values(reservation, items)
    reservation.status, reservation.closed_at = Reservation.Status.COMMITTED, now
    _prefetched(reservation, items)
    _log_reservation(user, ChangeLogEntry.Action.UPDATE, reservation, before=before)
    held = [widget for widget in widgets.values() if widget.held]
    outbox = Outbox()
    if held and outbox.subscriptions:
        _read_reserved(held, now)  # under the locks the statement took: for the events
    _reservation_events(EventType.RESERVATION_COMMITTED, reservation, widgets, {}, movements=movements, outbox=outbox)
    return reservation, movements


@transaction.atomic
def _commit_reservation_locked(reservation_id, user) -> tuple[Reservation, list[StockMovement]]:
    reservation, items = _lock_reservation(reservation_id)
    widgets = _lock_widgets({item.widget_id for item in items})
    now = timezone.now()  # after the locks: an adjustment that saw this reservation
    # expired ran before us, with an earlier clock, so we see it expired too.
    _must_be_active(reservation, now, "committed")

    before = _reservation_values(reservation, items)
    reservation.status, reservation.closed_at = Reservation.Status.COMMITTED, now
    reservation.save(update_fields=["status", "closed_at"])
    note = f"Reservation {reservation.pk}: {reservation.reference}"[:255]
    movements = []
    for item in items:
        widget = widgets[item.widget_id]
        # Held units are in stock (0 <= reserved <= stock), so this cannot go below zero.
        widget.stock -= item.quantity
        widget.reserved -= item.quantity
        widget.held -= item.quantity
        movements.append(
            StockMovement(
                widget=widget,
                delta=-item.quantity,
                reason=StockMovement.Reason.SOLD,
                note=note,
                stock_after=widget.stock,
                created_by=user if user is not None and user.is_authenticated else None,
            )
        )
    _write_stock(widgets.values(), now, held=True)
    movements = StockMovement.objects.bulk_create(movements)
    _prefetched(reservation, items)
    # Complete: sold and committed.
    _log_reservation(user, ChangeLogEntry.Action.UPDATE, reservation, before=before)
    # What is available does not change (held units were sold), so no alert is crossed.
    _reservation_events(EventType.RESERVATION_COMMITTED, reservation, widgets, {}, movements=movements)
    return reservation, movements


@transaction.atomic
def release_reservation(*, reservation_id: int, user=None) -> Reservation:
    """Give back what an active reservation holds; it becomes ``released``.

    Raises ``Reservation.DoesNotExist``, ``ReservationExpired`` or ``ReservationNotActive``.
    """
    reservation, items = _lock_reservation(reservation_id)
    widgets = _lock_widgets({item.widget_id for item in items})
    now = timezone.now()
    _must_be_active(reservation, now, "released")
    levels_before = {pk: (alert_level(widget), widget.reorder_level) for pk, widget in widgets.items()}
    for item in items:
        widgets[item.widget_id].reserved -= item.quantity
    _release_held(widgets, items)

    before = _reservation_values(reservation, items)
    reservation.status, reservation.closed_at = Reservation.Status.RELEASED, now
    reservation.save(update_fields=["status", "closed_at"])
    _prefetched(reservation, items)
    # Complete: the units are available again.
    _log_reservation(user, ChangeLogEntry.Action.UPDATE, reservation, before=before)
    _reservation_events(EventType.RESERVATION_RELEASED, reservation, widgets, levels_before)
    return reservation


@transaction.atomic
def extend_reservation(*, reservation_id: int, ttl_seconds: int, user=None) -> Reservation:
    """Hold an active reservation until ``ttl_seconds`` from now. Never shortens it: an
    ``expires_at`` already later is kept.

    The widgets are locked too: otherwise an adjustment could count the reservation as
    expired and sell its units while this extension revives it.
    Raises ``ValueError``, ``Reservation.DoesNotExist``, ``ReservationExpired`` or
    ``ReservationNotActive``.
    """
    _check_ttl(ttl_seconds)
    reservation, items = _lock_reservation(reservation_id)
    _lock_widgets({item.widget_id for item in items})
    now = timezone.now()
    _must_be_active(reservation, now, "extended")

    before = _reservation_values(reservation, items)
    new_expiry = now + timedelta(seconds=ttl_seconds)
    if new_expiry > reservation.expires_at:
        reservation.expires_at = new_expiry
        reservation.save(update_fields=["expires_at"])
    _prefetched(reservation, items)
    # Complete: held until the new expires_at.
    _log_reservation(user, ChangeLogEntry.Action.UPDATE, reservation, before=before)
    return reservation


EXPIRY_BATCH = 100


def record_expired_reservations(*, now=None, limit: int | None = None, batch_size: int = EXPIRY_BATCH) -> int:
    """Record the expiry of active reservations past ``expires_at`` (at ``now``, default the
    clock; never later than the clock): store ``expired``, write a change-log entry (no user)
    and send ``reservation.expired`` and the stock alerts the expiry crosses (an expiry makes
    units available again: ``widget.back_in_stock`` from 0, and above the reorder level the
    ``widget.low_stock`` alert is armed again). At most ``limit`` (default: all of them), in
    transactions of ``batch_size``. Returns how many were recorded.

    The API shows such a reservation as ``expired`` from its ``expires_at`` on, and it holds
    nothing from then: this changes no number anyone reads, it is the bookkeeping (and the
    event) that follows. Run by the worker's sweep (``manage.py run_worker``, every
    ``--sweep-every`` seconds) and by ``manage.py expire_reservations``.

    Exactly once per reservation, with any number of sweeps at once: each batch locks its
    reservations with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a row another sweep, or a commit,
    release or extend, holds is left to it), then their widgets in id order, reservation
    rows before widget rows like every reservation service, and checks each again under
    the locks. One that was extended, committed or released first is not expired.
    """
    recorded = 0
    while limit is None or recorded < limit:
        size = batch_size if limit is None else min(batch_size, limit - recorded)
        done = _record_expired_batch(now, size)
        if not done:
            break
        recorded += done
    return recorded


@transaction.atomic
def _record_expired_batch(now, size: int) -> int:
    """One transaction of ``record_expired_reservations``: up to ``size`` of them."""
    cutoff = min(now, timezone.now()) if now is not None else timezone.now()
    # ``of=("self",)``: the creator is read along (the event shows it), not locked.
    reservations = list(
        Reservation.objects.expired_unrecorded(now=cutoff)
        .select_for_update(skip_locked=True, of=("self",))
        .select_related("created_by")
        .order_by("expires_at", "id")[:size]
    )
    if not reservations:
        return 0
    items_of: dict[int, list[ReservationItem]] = {r.pk: [] for r in reservations}
    for item in ReservationItem.objects.filter(reservation__in=reservations).order_by("id"):
        items_of[item.reservation_id].append(item)
    widgets = _lock_widgets({item.widget_id for items in items_of.values() for item in items})
    now = timezone.now()  # after the locks, like every reservation service
    # Under the locks, again: still active and past its time (not extended meanwhile).
    expired = [r for r in reservations if r.status == Reservation.Status.ACTIVE and r.expires_at <= min(cutoff, now)]
    if not expired:
        return 0

    # ``reserved`` (read under the locks, from the clock) no longer counts these: the alerts
    # compare what was available while they held their units with what is available now.
    released: dict[int, int] = {}
    entries = []
    for reservation in expired:
        items = items_of[reservation.pk]
        before = _reservation_values(reservation, items)
        # The one place where an expiry gives its items' units back to their widgets, under
        # the widgets' row locks: off ``held`` too (written once, below).
        for item in items:
            released[item.widget_id] = released.get(item.widget_id, 0) + item.quantity
            widgets[item.widget_id].held -= item.quantity
        reservation.status = Reservation.Status.EXPIRED
        _prefetched(reservation, items)
        entries.append(_reservation_log_entry(None, ChangeLogEntry.Action.UPDATE, reservation, before=before))
    Reservation.objects.filter(pk__in=[r.pk for r in expired], status=Reservation.Status.ACTIVE).update(
        status=Reservation.Status.EXPIRED
    )
    _write_held([widgets[pk] for pk in released])
    ChangeLogEntry.objects.bulk_create(entries)

    outbox = Outbox()
    for reservation in expired:
        outbox.add(
            EventType.RESERVATION_EXPIRED,
            object_type="reservation",
            object_id=reservation.pk,
            data=lambda reservation=reservation: _reservation_data(reservation),
        )
    for pk, units in sorted(released.items()):
        widget = widgets[pk]
        level_before = (alert_level(widget) - units, widget.reorder_level)
        for alert in threshold_events(before=level_before, after=(alert_level(widget), widget.reorder_level)):
            _object_event(outbox, alert, widget)
    outbox.flush()
    return len(expired)


def _write_stock(widgets: Collection[Widget], now, *, held: bool = False) -> None:
    """Write each widget's ``stock`` (and ``held`` if asked; both already computed, the
    widgets locked) in one UPDATE, bumping version. Only the stock differs between the
    widgets, so only it needs a CASE (bulk_update would build one per field: three times
    the expressions, most of a batch's time)."""
    widgets = list(widgets)
    if not widgets:
        return
    extra = {"held": _per_widget(widgets, "held")} if held else {}
    Widget.objects.filter(pk__in=[w.pk for w in widgets]).update(
        stock=_per_widget(widgets, "stock"),
        version=F("version") + 1,
        updated_at=now,
        **extra,
    )
    for widget in widgets:
        widget.version += 1
        widget.updated_at = now


def _per_widget(widgets: Collection[Widget], attname: str) -> Case:
    return Case(*(When(pk=w.pk, then=Value(getattr(w, attname))) for w in widgets), output_field=IntegerField())


def _write_held(widgets: Collection[Widget]) -> None:
    """Write each widget's ``held`` (already computed; the caller holds the row locks) in
    one UPDATE. The version is not bumped: ``reserved`` is in the ETag by itself."""
    widgets = list(widgets)
    if widgets:
        Widget.objects.filter(pk__in=[w.pk for w in widgets]).update(held=_per_widget(widgets, "held"))


def _release_held(widgets_by_id: Mapping[int, Widget], items: Collection[ReservationItem]) -> None:
    """A reservation stops being stored as ``active`` (released, or its expiry recorded):
    take its ``items`` off the ``held`` of their widgets, which the caller has locked
    (``_lock_widgets``, ascending ids) and passes by id. One UPDATE; ``reserved`` is
    untouched (an expired reservation already reserves nothing by the clock)."""
    for item in items:
        widgets_by_id[item.widget_id].held -= item.quantity
    _write_held([widgets_by_id[pk] for pk in {item.widget_id for item in items}])


def _prefetched(reservation: Reservation, items: list[ReservationItem]) -> None:
    """Make ``reservation.items.all()`` answer ``items`` without a query."""
    for item in items:
        item.reservation = reservation
    reservation._prefetched_objects_cache = {"items": items}


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
    movement = None
    if stock:
        movement = StockMovement.objects.create(
            widget=widget,
            delta=stock,
            reason=StockMovement.Reason.INITIAL,
            stock_after=stock,
            created_by=user,
        )
    _log_change(user, ChangeLogEntry.Action.CREATE, widget, before={}, after=_audited_values(widget))
    widget.reserved = 0  # nothing can be reserved of a widget that did not exist
    outbox = Outbox()
    _object_event(outbox, EventType.WIDGET_CREATED, widget)
    if movement is not None:
        _stock_events(outbox, movement, widget, None)
    outbox.flush()
    return widget


@transaction.atomic
def update_widget(
    *,
    widget: Widget,
    changes: Mapping[str, Any],
    user=None,
    expected_version: int | Collection[int] | None = None,
) -> Widget:
    """Change a widget's descriptive fields. Stock is not among them: see ``adjust_stock``.

    The row is locked and re-read first, so the version check and the write see the same
    row, and only the changed fields are written (a stale ``widget`` never overwrites the
    stock a concurrent adjustment just wrote). Raises ``VersionMismatch`` if
    ``expected_version`` is given and no longer current.
    """
    if "stock" in changes:
        raise ValueError("stock changes go through adjust_stock")
    locked = Widget.objects.select_for_update().get(pk=widget.pk)
    _check_version(locked, expected_version)
    before = _audited_values(locked)
    for field, value in changes.items():
        setattr(locked, field, value)
    locked.version = F("version") + 1
    try:
        with transaction.atomic():
            locked.save(update_fields=[*changes, "version", "updated_at"])
    except IntegrityError as exc:
        if "sku" in changes and Widget.objects.exclude(pk=locked.pk).filter(sku=locked.sku).exists():
            raise DuplicateSku(locked.sku) from exc
        raise
    # The new version and, for the caller's representation, the units reserved: one query.
    locked.version, locked.reserved = (
        Widget.objects.with_availability().values_list("version", "reserved").get(pk=locked.pk)
    )
    if _log_change(user, ChangeLogEntry.Action.UPDATE, locked, before=before, after=_audited_values(locked)):
        outbox = Outbox()
        _object_event(outbox, EventType.WIDGET_UPDATED, locked)
        # A new reorder level can put the widget at or below it without any stock moving.
        level = alert_level(locked)
        for event_type in threshold_events(
            before=(level, before["reorder_level"]), after=(level, locked.reorder_level)
        ):
            _object_event(outbox, event_type, locked)
        outbox.flush()
    return locked


@transaction.atomic
def delete_widget(*, widget: Widget, user=None, expected_version: int | Collection[int] | None = None) -> None:
    """Delete a widget that has no stock history; one with history is archived instead.

    Raises ``VersionMismatch`` if ``expected_version`` is given and no longer current.
    """
    history = WidgetHasHistory(
        "This widget has stock history and cannot be deleted; archive it with is_active=false instead."
    )
    locked = Widget.objects.select_for_update().get(pk=widget.pk)
    _check_version(locked, expected_version)
    if locked.movements.exists():
        raise history
    locked.reserved = 0  # no history: never had stock, so nothing of it is reserved
    before, pk = _audited_values(locked), locked.pk
    try:
        deleted, _ = locked.delete()
    except ProtectedError as exc:  # a movement was written since the check above
        raise history from exc
    if deleted:
        _log_change(user, ChangeLogEntry.Action.DELETE, locked, before=before, after={}, object_id=pk)
        outbox = Outbox()
        _object_event(outbox, EventType.WIDGET_DELETED, locked, object_id=pk)
        outbox.flush()


# --- Categories ------------------------------------------------------------------------------


@transaction.atomic
def create_category(*, user=None, **fields: Any) -> Category:
    category = Category(**fields)
    category.save()
    _log_change(user, ChangeLogEntry.Action.CREATE, category, before={}, after=_audited_values(category))
    outbox = Outbox()
    _object_event(outbox, EventType.CATEGORY_CREATED, category)
    outbox.flush()
    return category


@transaction.atomic
def update_category(
    *,
    category: Category,
    changes: Mapping[str, Any],
    user=None,
    expected_version: int | Collection[int] | None = None,
) -> Category:
    """Raises ``VersionMismatch`` if ``expected_version`` is given and no longer current."""
    locked = Category.objects.select_for_update().get(pk=category.pk)
    _check_version(locked, expected_version)
    before = _audited_values(locked)
    for field, value in changes.items():
        setattr(locked, field, value)
    locked.version = F("version") + 1
    locked.save()
    locked.refresh_from_db(fields=["version", "slug"])
    if _log_change(user, ChangeLogEntry.Action.UPDATE, locked, before=before, after=_audited_values(locked)):
        outbox = Outbox()
        _object_event(outbox, EventType.CATEGORY_UPDATED, locked)
        outbox.flush()
    return locked


@transaction.atomic
def delete_category(*, category: Category, user=None, expected_version: int | Collection[int] | None = None) -> None:
    """Delete a category; one that still has widgets is refused.

    Raises ``VersionMismatch`` if ``expected_version`` is given and no longer current.
    """
    locked = Category.objects.select_for_update().get(pk=category.pk)
    _check_version(locked, expected_version)
    before, pk = _audited_values(locked), locked.pk
    try:
        deleted, _ = locked.delete()
    except ProtectedError as exc:
        raise CategoryInUse(
            "This category still has widgets; move or delete them first.",
            widgets=locked.widgets.count(),
        ) from exc
    if deleted:
        _log_change(user, ChangeLogEntry.Action.DELETE, locked, before=before, after={}, object_id=pk)
        outbox = Outbox()
        _object_event(outbox, EventType.CATEGORY_DELETED, locked, object_id=pk)
        outbox.flush()


# --- Change log ---------------------------------------------------------------------------------
# Called inside the transaction of each write above, so an entry exists exactly when the
# change was committed. Stock adjustments write none: the ledger is their log.

AUDITED_FIELDS = {
    Widget: ["sku", "name", "description", "category", "price", "stock", "reorder_level", "is_active"],
    Category: ["name", "slug", "description"],
}
OBJECT_TYPES = {Widget: ChangeLogEntry.ObjectType.WIDGET, Category: ChangeLogEntry.ObjectType.CATEGORY}


def _audited_values(instance) -> dict[str, Any]:
    """The audited fields as the API shows them: foreign keys as ids, decimals as strings
    with the field's decimal places, datetimes in ISO 8601 UTC."""
    values = {}
    for name in AUDITED_FIELDS[type(instance)]:
        field = instance._meta.get_field(name)
        values[name] = _as_shown(field, field.value_from_object(instance))
    return values


def _as_shown(field, value):
    if value is None:
        return None
    if isinstance(field, models.DecimalField):
        # A default (price=0) is still the int it was declared as until the row is re-read.
        return f"{Decimal(value):.{field.decimal_places}f}"
    if isinstance(field, models.DateTimeField):
        text = value.astimezone(datetime.UTC).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return value


def _change_entry(user, action: str, instance, before: dict, after: dict, object_id=None) -> ChangeLogEntry | None:
    """The (unsaved) entry for one change; None for an update that changed nothing."""
    changes = {
        name: [before.get(name), after.get(name)]
        for name in AUDITED_FIELDS[type(instance)]
        if before.get(name) != after.get(name)
    }
    if action == ChangeLogEntry.Action.UPDATE and not changes:
        return None
    return ChangeLogEntry(
        user=user if user is not None and user.is_authenticated else None,
        action=action,
        object_type=OBJECT_TYPES[type(instance)],
        object_id=object_id or instance.pk,
        object_repr=str(instance)[:200],
        changes=changes,
    )


def _log_change(user, action: str, instance, *, before: dict, after: dict, object_id=None) -> ChangeLogEntry | None:
    """Write the change's entry; returns it, or None for an update that changed nothing."""
    entry = _change_entry(user, action, instance, before, after, object_id)
    if entry is not None:
        entry.save()
    return entry


# --- Events ------------------------------------------------------------------------------------
# Recorded by the writes above in their own transaction, through an ``Outbox`` (webhooks.services):
# an event exists, with its deliveries and their task, exactly when the change was committed.


def alert_level(widget: Widget, *, stock: int | None = None) -> int:
    """The level the stock alerts (low, out of, back in stock) watch, for ``widget`` now or
    with ``stock`` units (its stock at one item of a batch).

    It is what can still be sold, ``stock - reserved`` (``widget.reserved`` as read under
    the row lock, see ``_read_reserved``): units held for someone else are not in stock for
    anyone else, so a reservation can make a widget low and its release bring it back.
    """
    return (widget.stock if stock is None else stock) - widget.reserved


def threshold_events(*, before: tuple[int, int], after: tuple[int, int]) -> list[str]:
    """The alerts a change crosses, from ``(level, reorder_level)`` before it to after it.

    Alerts fire on the crossing only, so a widget that stays low is not reported again:
    ``widget.low_stock`` when the level goes from above the reorder level to at or below it,
    ``widget.out_of_stock`` when it reaches 0, ``widget.back_in_stock`` when it leaves 0.
    Both ends are read under the widget's row lock, so concurrent changes cannot both cross.
    """
    (level_before, reorder_before), (level_after, reorder_after) = before, after
    events = []
    if level_before > reorder_before and level_after <= reorder_after:
        events.append(EventType.WIDGET_LOW_STOCK)
    if level_before > 0 and level_after <= 0:
        events.append(EventType.WIDGET_OUT_OF_STOCK)
    if level_before <= 0 and level_after > 0:
        events.append(EventType.WIDGET_BACK_IN_STOCK)
    return events


def _iso(value) -> str:
    # As the API writes times (DRF's ISO 8601, UTC as Z).
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def _widget_data(widget: Widget, *, stock: int | None = None, pk: int | None = None) -> dict[str, Any]:
    """The widget as the API shows it (without ``url``), with ``stock`` units if given."""
    stock = widget.stock if stock is None else stock
    available = stock - widget.reserved
    return {
        "id": pk or widget.pk,
        "sku": widget.sku,
        "name": widget.name,
        "description": widget.description,
        "category": widget.category_id,
        "price": f"{Decimal(str(widget.price)):.2f}",
        "stock": stock,
        "reserved": widget.reserved,
        "available": available,
        "reorder_level": widget.reorder_level,
        "low_stock": available <= widget.reorder_level,
        "is_active": widget.is_active,
        "created_at": _iso(widget.created_at),
        "updated_at": _iso(widget.updated_at),
    }


def _category_data(category: Category, *, pk: int | None = None) -> dict[str, Any]:
    """The category as the API shows it (without ``url``)."""
    return {"id": pk or category.pk, "name": category.name, "slug": category.slug, "description": category.description}


def _movement_data(movement: StockMovement) -> dict[str, Any]:
    """The movement as the API shows it."""
    return {
        "id": movement.pk,
        "widget": movement.widget_id,
        "delta": movement.delta,
        "reason": movement.reason,
        "note": movement.note,
        "stock_after": movement.stock_after,
        "created_by": getattr(movement.created_by, "username", None),
        "created_at": _iso(movement.created_at),
    }


def _object_event(outbox: Outbox, event_type: str, instance, *, object_id: int | None = None) -> None:
    """A widget.* or category.* event; ``object_id`` names a deleted object."""
    if isinstance(instance, Widget):
        kind, data = "widget", lambda: _widget_data(instance, pk=object_id)
    else:
        kind, data = "category", lambda: _category_data(instance, pk=object_id)
    outbox.add(event_type, object_type=kind, object_id=object_id or instance.pk, sequence=instance.version, data=data)


def _stock_events(
    outbox: Outbox, movement: StockMovement, widget: Widget, level_before: tuple[int, int] | None
) -> None:
    """``stock.adjusted`` for one movement, and the alerts it crosses from ``level_before``
    (``(level, reorder_level)``; None for a new widget's initial stock, which crosses nothing)."""
    stock = movement.stock_after
    outbox.add(
        EventType.STOCK_ADJUSTED,
        object_type="widget",
        object_id=widget.pk,
        sequence=widget.version,
        data=lambda: {"movement": _movement_data(movement), "widget": _widget_data(widget, stock=stock)},
    )
    if level_before is None:
        return
    after = (alert_level(widget, stock=stock), widget.reorder_level)
    for event_type in threshold_events(before=level_before, after=after):
        outbox.add(
            event_type,
            object_type="widget",
            object_id=widget.pk,
            sequence=widget.version,
            data=lambda: _widget_data(widget, stock=stock),
        )


def _reservation_data(reservation: Reservation) -> dict[str, Any]:
    """The reservation as the API shows it."""
    return {
        "id": reservation.pk,
        "reference": reservation.reference,
        "status": reservation.state,
        "created_at": _iso(reservation.created_at),
        "expires_at": _iso(reservation.expires_at),
        "closed_at": _iso(reservation.closed_at) if reservation.closed_at else None,
        "items": [{"widget": item.widget_id, "quantity": item.quantity} for item in reservation.items.all()],
        "created_by": getattr(reservation.created_by, "username", None),
    }


def _reservation_events(
    event_type: str,
    reservation: Reservation,
    widgets: Mapping[int, Widget],
    levels_before: Mapping[int, tuple[int, int]],
    *,
    movements: Sequence[StockMovement] = (),
    outbox: Outbox | None = None,
) -> None:
    """``reservation.*`` for one change of a reservation, the ``stock.adjusted`` of the
    movements it wrote (a commit's sales), and the alerts the change of what is available
    crosses for each widget (``levels_before``: its ``(level, reorder_level)`` before).
    ``outbox``: the change's own, when it has already read the subscriptions."""
    if outbox is None:
        outbox = Outbox()
    outbox.add(
        event_type, object_type="reservation", object_id=reservation.pk, data=lambda: _reservation_data(reservation)
    )
    for movement in movements:
        _stock_events(outbox, movement, movement.widget, None)
    for pk, level_before in levels_before.items():
        widget = widgets[pk]
        for alert in threshold_events(before=level_before, after=(alert_level(widget), widget.reorder_level)):
            outbox.add(
                alert,
                object_type="widget",
                object_id=pk,
                sequence=widget.version,
                data=lambda widget=widget: _widget_data(widget),
            )
    outbox.flush()


def _reservation_values(reservation: Reservation, items: Sequence[ReservationItem]) -> dict[str, Any]:
    return {
        "reference": reservation.reference,
        "status": reservation.status,
        "expires_at": reservation.expires_at.isoformat(),
        "items": [[item.widget_id, item.quantity] for item in items],
    }


def _log_reservation(user, action: str, reservation: Reservation, *, before: dict) -> None:
    """Who reserved (create) or committed, released or extended (update) a reservation.
    ``items`` are ``[widget, quantity]`` pairs."""
    _reservation_log_entry(user, action, reservation, before=before).save()


def _reservation_log_entry(user, action: str, reservation: Reservation, *, before: dict) -> ChangeLogEntry:
    """The (unsaved) entry of ``_log_reservation``; ``user`` None for the expiry sweep."""
    after = _reservation_values(reservation, reservation.items.all())
    return ChangeLogEntry(
        user=user if user is not None and user.is_authenticated else None,
        action=action,
        object_type=ChangeLogEntry.ObjectType.RESERVATION,
        object_id=reservation.pk,
        object_repr=reservation.reference[:200],
        changes={name: [before.get(name), value] for name, value in after.items() if before.get(name) != value},
    )


# --- API tokens ------------------------------------------------------------------------------


def revoke_tokens(tokens) -> int:
    """Revoke the tokens of the queryset ``tokens`` not revoked yet (an earlier revocation
    keeps its time); every process refuses them from the next request on. Returns how many."""
    count = tokens.revoke()
    credentials.changed()
    return count


# --- Idempotency keys ------------------------------------------------------------------------

IDEMPOTENCY_KEY_RETENTION = timedelta(hours=24)


def purge_idempotency_keys(*, older_than: timedelta = IDEMPOTENCY_KEY_RETENTION, limit: int | None = None) -> int:
    """Delete stored Idempotency-Key responses older than ``older_than`` (at most ``limit``
    of them, the oldest first); returns how many."""
    if older_than < IDEMPOTENCY_KEY_RETENTION:
        raise ValueError("idempotency keys are kept for at least 24 hours")
    expired = IdempotencyKey.objects.expired(older_than=older_than)
    if limit is not None:
        expired = IdempotencyKey.objects.filter(pk__in=expired.order_by("created_at").values("pk")[:limit])
    deleted, _ = expired.delete()
    return deleted


# --- CSV import (staff experience) -------------------------------------------------------
# Kept in its own block: rows arrive validated by ``widgets.csv_io.read_widget_rows``.


@dataclasses.dataclass
class ImportSummary:
    """What an import did (or, on a dry run, would do)."""

    dry_run: bool
    created: list[str] = dataclasses.field(default_factory=list)  # SKUs
    updated: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # SKU -> changed fields
    stock_changes: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # SKU -> (old, new)
    unchanged: int = 0


class ImportConflict(InventoryError):
    code = "import_conflict"


class StaleImport(ImportConflict):
    """Rows that would undo changes made since the file was exported; nothing was imported.
    ``problems`` are ``(row number, column, message)``, in file order."""

    code = "stale_import"

    def __init__(self, problems: list[tuple[int, str, str]]):
        super().__init__(
            f"{len(problems)} row(s) would undo changes made since the file was read; nothing was imported."
        )
        self.problems = problems


IMPORT_BATCH = 1000
IMPORT_NOTE = "CSV import"


def import_widgets(
    *, rows, user=None, dry_run: bool = False, progress=None, stock_corrections: bool = False
) -> ImportSummary:
    """Create or update one widget per row, all in one transaction or not at all.

    ``rows`` are ``csv_io.WidgetRow``s (one per SKU, already validated). A new SKU is
    created with its stock as an ``initial`` movement; an existing SKU gets the given
    fields, and a different stock is recorded as a ``correction`` movement, exactly as
    ``create_widget`` and ``adjust_stock`` keep the ledger.

    A stale file never reverts stock: a row carrying the widget's ``version`` from the
    export must still match it, and a row without one may change an existing widget's
    stock only when ``stock_corrections`` is chosen. Otherwise ``StaleImport`` lists the
    rows (dry run or not) and nothing is written. Existing widgets are locked
    (SELECT ... FOR UPDATE) while the import runs, so no concurrent adjustment is lost.
    Every database step is a bulk statement: the query count grows with the number of
    batches, not rows. ``progress(n)`` is told as each batch of ``n`` rows is written.
    """
    summary = ImportSummary(dry_run=dry_run)
    with transaction.atomic():
        existing: dict[str, Widget] = {}
        skus = [row.sku for row in rows]
        for start in range(0, len(skus), IMPORT_BATCH):
            found = Widget.objects.filter(sku__in=skus[start : start + IMPORT_BATCH])
            if not dry_run:
                found = found.select_for_update()
            existing.update((widget.sku, widget) for widget in found)
        # What is held of each, for the stock alerts (alert_level): one statement after the locks.
        _read_reserved(list(existing.values()))

        now = timezone.now()
        to_create: list[Widget] = []
        to_update: list[Widget] = []
        corrections: list[StockMovement] = []
        change_log: list[ChangeLogEntry] = []
        changed_fields: set[str] = set()
        stale: list[tuple[int, str, str]] = []
        levels_before: dict[str, tuple[int, int]] = {}
        initial_movements: list[StockMovement] = []
        for row in rows:
            values = dict(row.values)
            stock = values.pop("stock", None)
            widget = existing.get(row.sku)
            if widget is None:
                new_widget = Widget(sku=row.sku, stock=stock or 0, **values)
                new_widget.reserved = 0  # a new widget: nothing of it is reserved
                to_create.append(new_widget)
                summary.created.append(row.sku)
                continue
            changes = [name for name, value in values.items() if _differs(widget, name, value)]
            stock_changed = stock is not None and stock != widget.stock
            if row.version is not None and row.version != widget.version:
                stale.append(
                    (row.row, "version", f"changed since the export: version {row.version}, now {widget.version}")
                )
                continue
            if stock_changed and row.version is None and not stock_corrections:
                stale.append(
                    (
                        row.row,
                        "stock",
                        (
                            f"{widget.stock} in stock now, {stock} in the file, and no version shows the file is "
                            "current: "
                            "export again, or choose to apply stock corrections"
                        ),
                    )
                )
                continue
            if not changes and not stock_changed:
                summary.unchanged += 1
                continue
            before = _audited_values(widget)
            levels_before[widget.sku] = (alert_level(widget), widget.reorder_level)
            for name in changes:
                setattr(widget, name, values[name])
            if changes:
                summary.updated[row.sku] = changes
                changed_fields.update(changes)
                # The stock difference is a correction in the ledger, not a change entry.
                change_log.append(
                    _change_entry(user, ChangeLogEntry.Action.UPDATE, widget, before, _audited_values(widget))
                )
            if stock_changed:
                summary.stock_changes[row.sku] = (widget.stock, stock)
                corrections.append(
                    StockMovement(
                        widget=widget,
                        delta=stock - widget.stock,
                        reason=StockMovement.Reason.CORRECTION,
                        note=IMPORT_NOTE,
                        stock_after=stock,
                        created_by=user,
                    )
                )
                widget.stock = stock
                changed_fields.add("stock")
            to_update.append(widget)
        if stale:
            raise StaleImport(stale)
        if dry_run:
            return summary

        try:
            with transaction.atomic():
                for start in range(0, len(to_create), IMPORT_BATCH):
                    batch = to_create[start : start + IMPORT_BATCH]
                    Widget.objects.bulk_create(batch)
                    initial_movements += StockMovement.objects.bulk_create(
                        StockMovement(
                            widget=widget,
                            delta=widget.stock,
                            reason=StockMovement.Reason.INITIAL,
                            note=IMPORT_NOTE,
                            stock_after=widget.stock,
                            created_by=user,
                        )
                        for widget in batch
                        if widget.stock
                    )
                    change_log.extend(
                        _change_entry(user, ChangeLogEntry.Action.CREATE, widget, {}, _audited_values(widget))
                        for widget in batch
                    )
                    if progress:
                        progress(len(batch))
        except IntegrityError as exc:
            # A SKU checked as new above was created meanwhile by someone else.
            raise ImportConflict(
                "A widget in the file was created while importing; nothing was imported. Try again."
            ) from exc
        for start in range(0, len(to_update), IMPORT_BATCH):
            batch = to_update[start : start + IMPORT_BATCH]
            _update_widgets_from_values(batch, sorted(changed_fields), now)
            if progress:
                progress(len(batch))
        StockMovement.objects.bulk_create(corrections, batch_size=IMPORT_BATCH)
        ChangeLogEntry.objects.bulk_create([e for e in change_log if e], batch_size=IMPORT_BATCH)
        _import_events(to_create, initial_movements, to_update, corrections, summary, levels_before, now)
    return summary


def _import_events(created, initial_movements, updated, corrections, summary, levels_before, now) -> None:
    """The events of an import, as if each row had gone through the API one by one."""
    outbox = Outbox()
    for widget in created:
        _object_event(outbox, EventType.WIDGET_CREATED, widget)
    for movement in initial_movements:
        _stock_events(outbox, movement, movement.widget, None)
    for widget in updated:  # written by one UPDATE: bring the objects in step with it
        widget.version += 1
        widget.updated_at = now
        if widget.sku in summary.updated:
            _object_event(outbox, EventType.WIDGET_UPDATED, widget)
    corrected = set()
    for movement in corrections:
        corrected.add(movement.widget.sku)
        _stock_events(outbox, movement, movement.widget, levels_before[movement.widget.sku])
    for widget in updated:  # a new reorder level alone can cross it too
        if widget.sku not in corrected:
            level = alert_level(widget)
            after = (level, widget.reorder_level)
            for event_type in threshold_events(before=levels_before[widget.sku], after=after):
                _object_event(outbox, event_type, widget)
    outbox.flush()


def _differs(widget: Widget, name: str, value: Any) -> bool:
    if name == "category":  # compare ids: reading widget.category would query once per row
        return widget.category_id != (value.pk if value is not None else None)
    return getattr(widget, name) != value


def _update_widgets_from_values(widgets: list[Widget], fields: list[str], now) -> None:
    """Write ``fields`` of ``widgets`` (and bump version, updated_at) in one
    ``UPDATE ... FROM (VALUES ...)`` statement (PostgreSQL, SQLite >= 3.33).

    Django's ``bulk_update`` builds a CASE WHEN expression per row and field, which costs
    milliseconds of Python per row: 100,000 rows took minutes. This is linear and fast.
    """
    table = connection.ops.quote_name(Widget._meta.db_table)
    columns = [Widget._meta.get_field(name) for name in fields]
    assignments = ["version = version + 1", "updated_at = %s"] + [
        f"{connection.ops.quote_name(column.column)} = CAST(v.column{i} AS {column.cast_db_type(connection)})"
        for i, column in enumerate(columns, start=2)
    ]
    row = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
    params: list[Any] = [Widget._meta.get_field("updated_at").get_db_prep_save(now, connection)]
    for widget in widgets:
        params.append(widget.pk)
        params.extend(column.get_db_prep_save(getattr(widget, column.attname), connection) for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {', '.join(assignments)} "
            f"FROM (VALUES {', '.join([row] * len(widgets))}) AS v WHERE {table}.id = v.column1",
            params,
        )
