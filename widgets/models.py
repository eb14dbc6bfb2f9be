"""
Inventory data: categories, widgets and the append-only stock ledger.

A widget's ``stock`` is a cached sum of its ``StockMovement`` deltas; only
``widgets.services`` writes either, so the two never drift apart.
"""

import hashlib
import hmac
import inspect
import json
import secrets
from datetime import UTC, datetime, time, timedelta
from time import monotonic

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import connections, models
from django.db.models import Count, DecimalField, ExpressionWrapper, F, OuterRef, Q, Subquery, Sum, signals
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.functions import Coalesce, TruncDate
from django.db.models.query import ModelIterable
from django.db.models.query_utils import DeferredAttribute
from django.utils import timezone
from django.utils.text import slugify

from .prepared import prepared
from .validators import SkuFormField, category_name, multi_line, one_line, sku_validator


class SkuField(models.CharField):
    """A SKU: stored upper-case (``sku_validator``); its form field (the admin) takes a SKU
    as typed and upper-cases it, exactly as the API does (``validators.normalize_sku``)."""

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": SkuFormField, **kwargs})


class CategoryQuerySet(models.QuerySet):
    def name_problem(self, name: str, *, exclude_pk=None) -> str | None:
        """Why ``name`` cannot be used (its slug is empty or taken), or None if it can."""
        slug = slugify(name)
        if not slug:
            return "The name must contain at least one letter or digit."
        if self.exclude(pk=exclude_pk).filter(slug=slug).exists():
            return f"A category with the slug '{slug}' already exists."
        return None


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[one_line, category_name])
    slug = models.SlugField(max_length=100, unique=True, editable=False)
    description = models.TextField(blank=True, validators=[multi_line])
    version = models.PositiveIntegerField(default=1, editable=False)

    objects = CategoryQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        # The slug is derived data, never typed by hand: keep it in step with the name.
        self.slug = slugify(self.name)[:100]
        super().save(*args, **kwargs)

    def clean(self):
        # Model forms (the admin) call this; the API serializer asks name_problem itself.
        problem = Category.objects.name_problem(self.name or "", exclude_pk=self.pk)
        if problem:
            raise ValidationError({"name": problem})


# The planner's row count of each table (pg_class.reltuples), remembered per process.
TABLE_SIZE_SECONDS = 60
_table_sizes: dict[tuple[str, str], tuple[float, int]] = {}


def _table_size(queryset) -> int:
    """PostgreSQL's estimate of the rows in the queryset's table (-1: never analysed)."""
    key = (queryset.db, queryset.model._meta.db_table)
    cached = _table_sizes.get(key)
    if cached is not None and cached[0] > monotonic():
        return cached[1]
    with connections[queryset.db].cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [key[1]])
        size = int(cursor.fetchone()[0])
    _table_sizes[key] = (monotonic() + TABLE_SIZE_SECONDS, size)
    return size


def bounded_count(queryset, limit: int) -> tuple[int, bool]:
    """``(count, is_estimate)``: exact up to ``limit`` rows, above it PostgreSQL's
    estimate from the planner's statistics, so that counting never reads a large table.
    Other databases always count exactly.

    A table the statistics call small is counted at once (capped at ``limit + 1`` rows,
    one query, as a plain count would be); a large one is asked of the planner first,
    unless the queryset is the whole table: then the statistics are the planner's answer.
    """
    if connections[queryset.db].vendor != "postgresql":
        return queryset.count(), False
    unordered = queryset.order_by()
    estimate = None
    table_size = _table_size(queryset)
    if table_size > limit:
        if _whole_table(unordered.query):
            return table_size, True
        estimate = int(json.loads(unordered.explain(format="json"))[0]["Plan"]["Plan Rows"])
        if estimate > limit:
            return estimate, True
    # At most limit + 1 rows are counted, never the whole table. A queryset may count its
    # plain rows with SQL compiled once per process (WidgetQuerySet.compiled_count).
    compiled_count = getattr(queryset, "compiled_count", None)
    exact = compiled_count(limit=limit + 1) if compiled_count is not None else None
    if exact is None:
        exact = unordered[: limit + 1].count()
    if exact <= limit:
        return exact, False
    if estimate is None:
        estimate = int(json.loads(unordered.explain(format="json"))[0]["Plan"]["Plan Rows"])
    return max(estimate, exact), True


def _whole_table(query) -> bool:
    """Whether ``query`` has one row per row of its table: no filter, no grouping, no
    DISTINCT, no UNION (``select_related`` joins and annotations do not change the rows)."""
    return not query.where and query.group_by is None and not query.distinct and not query.combinator


class ReservedUnits(models.Expression):
    """The units of the outer widget held at ``now`` (default: when the query runs): the sum
    of its items in reservations that are active and not yet expired, as one correlated
    subquery answered from ``reservation_item_widget``.

    Written as SQL rather than built from querysets: the list and retrieve of every widget
    carry it, and resolving an ORM ``Subquery`` (joins, lookups, aggregation) cost more Python
    per request than the rest of a retrieve. The SQL is the same.
    """

    output_field = models.IntegerField()

    def __init__(self, now=None):
        super().__init__()
        self.now = now
        self.widget_alias = None

    @property
    def convert_value(self):
        # COALESCE(SUM(integer), 0) arrives as a Python int on every backend: no converter,
        # so a page of widgets is read without a conversion call per row.
        return self._convert_value_noop

    def resolve_expression(self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False):
        resolved = self.copy()
        resolved.widget_alias = query.get_initial_alias()  # the widget table of the outer query
        return resolved

    # The SQL for one (database vendor, widget table alias): only those vary between queries.
    _sql: dict[tuple[str, str], str] = {}

    def as_sql(self, compiler, connection):
        key = (connection.vendor, self.widget_alias)
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = self._build_sql_for(compiler, self.widget_alias)
        now = self.now or timezone.now()
        return sql, [Reservation.Status.ACTIVE, connection.ops.adapt_datetimefield_value(now)]

    @staticmethod
    def _build_sql_for(compiler, widget_alias):
        """The SQL, with two parameters: the active status and now."""
        qn = compiler.quote_name_unless_alias
        item, reservation = ReservationItem._meta, Reservation._meta

        def column(meta, name):
            return qn(meta.get_field(name).column)

        outer = qn(widget_alias)
        # ``held`` (units of reservations stored as active, expired ones included) is an upper
        # bound kept under the row lock: a widget holding nothing, most of them, skips the sum.
        return (
            f"CASE WHEN {outer}.{column(Widget._meta, 'held')} = 0 THEN 0 ELSE"
            f" COALESCE((SELECT SUM(i.{column(item, 'quantity')}) FROM {qn(item.db_table)} i"
            f" INNER JOIN {qn(reservation.db_table)} r"
            f" ON r.{column(reservation, 'id')} = i.{column(item, 'reservation')}"
            f" WHERE i.{column(item, 'widget')} = {outer}.{column(Widget._meta, 'id')}"
            f" AND r.{column(reservation, 'status')} = %s AND r.{column(reservation, 'expires_at')} > %s), 0) END"
        )


class LowStock(models.Expression):
    """The condition "available <= reorder_level" for the outer widget, as SQL: true for a
    widget at or below its reorder level by stock alone, whatever is reserved; otherwise
    only a widget with units ``held`` (the column kept under the row lock, tested first) has
    its reserved units at ``now`` summed (``ReservedUnits``). ``~LowStock()`` is its negation.

    Written as SQL once: building and resolving the same condition from ORM lookups and a
    subquery cost more Python than the rest of a filtered list. ``now`` defaults to when the
    query runs.
    """

    output_field = models.BooleanField()
    conditional = True
    # The SQL for one (database vendor, widget table alias).
    _sql: dict[tuple[str, str], str] = {}

    def __init__(self, now=None):
        super().__init__()
        self.now = now
        self.widget_alias = None

    def resolve_expression(self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False):
        resolved = self.copy()
        resolved.widget_alias = query.get_initial_alias()  # the widget table of the outer query
        return resolved

    def as_sql(self, compiler, connection):
        key = (connection.vendor, self.widget_alias)
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = self._build_sql(compiler)
        now = connection.ops.adapt_datetimefield_value(self.now or timezone.now())
        return sql, [Reservation.Status.ACTIVE, now]

    def _build_sql(self, compiler):
        qn = compiler.quote_name_unless_alias
        widget = Widget._meta

        def column(meta, name):
            return qn(meta.get_field(name).column)

        outer = qn(self.widget_alias)
        stock, level = f"{outer}.{column(widget, 'stock')}", f"{outer}.{column(widget, 'reorder_level')}"
        reserved = ReservedUnits._build_sql_for(compiler, self.widget_alias)
        held = f"{outer}.{column(widget, 'held')}"
        return f"({stock} <= {level} OR ({held} > 0 AND ({stock} - {reserved}) <= {level}))"


def reserved_units(now=None) -> ReservedUnits:
    """See ``ReservedUnits``."""
    return ReservedUnits(now)


# The descriptors of plain model fields, exactly (a subclass, such as a file field's, may do
# more): a value set on an instance goes into its __dict__ (a foreign key's id also drops a
# cached related object, which a new instance has none of).
PLAIN_FIELD_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


def _plain_fields(model, attnames) -> bool:
    """Whether ``attnames`` are every concrete field of ``model``, each behind a plain field
    descriptor: then, unless something listens to the model's pre_init or post_init signal,
    ``model.from_db`` with a value for each may be replaced by setting the values in the
    instance's ``__dict__``."""
    return len(attnames) == len(model._meta.concrete_fields) and all(
        type(inspect.getattr_static(model, name, None)) in PLAIN_FIELD_DESCRIPTORS for name in attnames
    )


class CompiledWidgetQuery:
    """Widgets with ``reserved``, read with the SQL the ORM compiles for
    ``with_availability()``, in the shapes of the hottest reads. Each is compiled once per
    process and database vendor with stand-ins for a key and for "now", which each call
    replaces:

    - ``LOOKUP``: ``.filter(pk=key)``, a widget's retrieve;
    - ``PAGE``: in the model's order, with ``LIMIT %s OFFSET %s``: a page of the list;
    - ``KEYSET``: ``.filter(pk__gte=key).order_by("pk")`` with ``LIMIT %s``: the keyset mode;
    - ``COUNT``: ``[:limit].count()``, the list's count, exact up to a limit (``bounded_count``).

    The instances are those the ORM query yields (the annotation included), built as its
    ``ModelIterable`` builds them, from the column positions and value converters the ORM's
    compiler found once (``Model.objects.raw`` matched the cursor's column names to the model's
    fields again for every request: 12% of a retrieve). Compiling the query cost a quarter of a
    retrieve's Python and 8% of a page's; and the ORM writes LIMIT and OFFSET into the SQL as
    numbers, where here they are parameters, so one prepared statement serves every page.
    """

    LOOKUP, PAGE, KEYSET, COUNT = "lookup", "page", "keyset", "count"
    KEY = -7_350_918_113  # stands for the key in the compiled parameters
    NOW = datetime(2000, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)  # and for "now"
    _compiled: dict[tuple[str, str], "CompiledWidgetQuery"] = {}

    def __init__(self, sql, params, key_at, now_at, init_names, model_columns, annotations, converters, plain_fields):
        self.sql, self.params, self.key_at, self.now_at = sql, params, key_at, now_at
        # How ModelIterable makes an instance of a row: the model's columns (a slice) and
        # their attribute names, the annotations' names and positions, and the converters
        # per position (none on PostgreSQL for a widget; SQLite's decimals and times).
        self.init_names, self.model_columns, self.annotations = init_names, model_columns, annotations
        self.converters, self.plain_fields = converters, plain_fields

    @classmethod
    def rows(cls, queryset: "WidgetQuerySet", shape: str, *, key=None, limit=None, offset=0) -> list["Widget"]:
        db = queryset.db
        connection = connections[db]
        compiled = cls._compiled_for(queryset, connection, shape)
        return compiled.execute(queryset.model, db, connection, shape, key=key, limit=limit, offset=offset)

    @classmethod
    def count(cls, queryset: "WidgetQuerySet", *, limit: int) -> int:
        connection = connections[queryset.db]
        compiled = cls._compiled_for(queryset, connection, cls.COUNT)
        with connection.cursor() as cursor:
            cursor.execute(*compiled.statement(connection, cls.COUNT, key=None, limit=limit, offset=0))
            return cursor.fetchone()[0]

    @classmethod
    def _compiled_for(cls, queryset, connection, shape) -> "CompiledWidgetQuery":
        compiled = cls._compiled.get((connection.vendor, shape))
        if compiled is None:
            compiled = cls._compiled[connection.vendor, shape] = cls._compile(queryset, connection, shape)
        return compiled

    def statement(self, connection, shape, *, key, limit, offset) -> tuple[str, list]:
        """The SQL and parameters to execute for this call: the key and "now" in place of
        their stand-ins, the LIMIT (and OFFSET) appended."""
        params = list(self.params)
        if self.now_at:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            for index in self.now_at:
                params[index] = now
        for index in self.key_at:
            params[index] = key
        if shape == self.PAGE:
            params += [limit, offset]
        elif shape in (self.KEYSET, self.COUNT):
            params.append(limit)
        return prepared(connection, self.sql, params)

    def execute(self, model, db, connection, shape, *, key, limit, offset) -> list["Widget"]:
        sql, params = self.statement(connection, shape, key=key, limit=limit, offset=offset)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if self.converters:
            rows = [self._converted(row, connection) for row in rows]
        init_names, model_columns = self.init_names, self.model_columns
        instances = []
        # The signals are asked per call: a receiver may be connected at any time.
        if self.plain_fields and not (signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model)):
            # What Model.__init__ leaves for a full row, without its per-field setattr and
            # its two signals, which nothing listens to here: a fifth of serializing a page.
            new = object.__new__
            for row in rows:
                instance = new(model)
                state = ModelState()
                state.adding, state.db = False, db
                instance.__dict__.update(zip(init_names, row[model_columns]), _state=state)
                instances.append(instance)
        else:
            from_db = model.from_db
            instances = [from_db(db, init_names, row[model_columns]) for row in rows]
        for name, position in self.annotations:
            for instance, row in zip(instances, rows, strict=True):
                setattr(instance, name, row[position])
        return instances

    def _converted(self, row, connection):
        # What SQLCompiler.apply_converters does, with this request's connection.
        row = list(row)
        for position, (converters, expression) in self.converters.items():
            value = row[position]
            for converter in converters:
                value = converter(value, expression, connection)
            row[position] = value
        return row

    @classmethod
    def _compile(cls, queryset, connection, shape):
        if shape == cls.COUNT:
            # The rows of the table, up to the limit: the annotation adds or removes none.
            # The count the ORM makes of a sliced queryset, without its annotation, which
            # PostgreSQL's planner drops from the subquery anyway.
            rows = queryset.model._default_manager.order_by().values("pk")
            sql, params = rows.query.get_compiler(connection=connection).as_sql()
            return cls(f"SELECT COUNT(*) FROM ({sql} LIMIT %s) subquery", list(params), [], [], [], None, [], {}, False)
        widgets = queryset.model._default_manager.with_availability(cls.NOW)
        if shape == cls.LOOKUP:
            widgets = widgets.filter(pk=cls.KEY)
        elif shape == cls.KEYSET:
            widgets = widgets.filter(pk__gte=cls.KEY).order_by("pk")
        compiler = widgets.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        sql += {cls.LOOKUP: "", cls.PAGE: " LIMIT %s OFFSET %s", cls.KEYSET: " LIMIT %s"}[shape]
        now = connection.ops.adapt_datetimefield_value(cls.NOW)
        key_at = [index for index, value in enumerate(params) if value == cls.KEY]
        now_at = [index for index, value in enumerate(params) if value == now]
        assert len(key_at) == (shape != cls.PAGE) and len(now_at) == 1, (sql, params)
        # As ModelIterable reads the compiler's select (no select_related here).
        select, model_positions = compiler.select, compiler.klass_info["select_fields"]
        model_columns = slice(model_positions[0], model_positions[-1] + 1)
        init_names = [column.target.attname for column, _, _ in select[model_columns]]
        annotations = list(compiler.annotation_col_map.items())
        converters = compiler.get_converters([column for column, _, _ in select[: compiler.col_count]])
        plain_fields = _plain_fields(widgets.model, init_names)
        return cls(sql, list(params), key_at, now_at, init_names, model_columns, annotations, converters, plain_fields)


class WidgetQuerySet(models.QuerySet):
    def with_availability(self, now=None):
        """Annotate ``reserved`` (units held by active, unexpired reservations) and make
        ``available`` (= stock - reserved) usable in filters and ordering. ``reserved`` is
        one subquery in the same SELECT, so a page of widgets costs no query per row;
        ``Widget.available`` reads it. Expiry needs no job: a reservation stops counting
        the moment its ``expires_at`` is past."""
        return self.annotate(reserved=reserved_units(now)).alias(available=F("stock") - F("reserved"))

    def get_with_availability(self, pk) -> "Widget | None":
        """``Widget.objects.with_availability().filter(pk=pk).first()`` from SQL compiled once
        per process (``CompiledWidgetQuery``), for the hottest read, a widget's retrieve;
        ``reserved`` is counted at the time of the call. None when there is no such widget.
        Only for the unfiltered queryset: the compiled SQL has no other condition."""
        if self.query.has_filters():
            raise TypeError("get_with_availability() ignores filters: call it on Widget.objects")
        try:
            pk = int(pk)
        except (TypeError, ValueError):
            return None
        if not 0 < pk < 2**63:
            return None  # no row can have it (and PostgreSQL would refuse the number)
        return next(iter(CompiledWidgetQuery.rows(self, CompiledWidgetQuery.LOOKUP, key=pk)), None)

    # The pages of the plain list (no filter, the model's order), the hottest list, from SQL
    # compiled once per process. LimitOffsetPagination asks any queryset that has these.

    def compiled_page(self, *, offset: int, limit: int) -> "list[Widget] | None":
        """``list(self[offset:offset + limit])``, or None when this queryset is not the plain
        one (filtered, reordered, narrowed to some columns...): then slice it as usual."""
        if not self._is_plain():
            return None
        return CompiledWidgetQuery.rows(self, CompiledWidgetQuery.PAGE, limit=limit, offset=offset)

    def compiled_count(self, *, limit: int) -> int | None:
        """``self[:limit].count()``, or None as below when this queryset is not the plain one."""
        if not self._is_plain():
            return None
        return CompiledWidgetQuery.count(self, limit=limit)

    def compiled_keyset(self, *, start: int, limit: int) -> "list[Widget] | None":
        """``list(self.filter(pk__gte=start).order_by("pk")[:limit])``, or None as above."""
        if not self._is_plain():
            return None
        return CompiledWidgetQuery.rows(self, CompiledWidgetQuery.KEYSET, key=start, limit=limit)

    def _is_plain(self) -> bool:
        """Whether the compiled SQL gives this queryset's rows: the widgets, each with
        ``reserved``, in the model's order, and nothing else asked of the query."""
        query = self.query
        return not (
            query.has_filters()
            or query.order_by
            or not query.default_ordering
            or query.distinct
            or query.extra
            or query.extra_order_by
            or query.group_by
            or query.select_for_update
            or query.select_related
            or query.values_select
            or query.combinator
            or query.is_sliced
            or query.deferred_loading != (frozenset(), True)
            or set(query.annotations) - {"reserved", "available"}
            or self._iterable_class is not ModelIterable
            or self._prefetch_related_lookups
        )

    def low_stock(self, now=None):
        """Widgets whose *available* units (stock - reserved) are at or below their
        reorder level: units promised to someone are not there to sell (``LowStock``)."""
        return self.filter(LowStock(now))

    def not_low_stock(self, now=None):
        return self.filter(~LowStock(now))

    def active(self):
        return self.filter(is_active=True)

    def stock_summary(self, now=None) -> dict:
        """Totals for the staff dashboard: ``widgets``, ``active``, ``units`` in stock,
        stock ``value`` (sum of price x stock) and ``low_stock`` (active widgets whose
        available units are at or below their reorder level) in one aggregate query;
        ``reserved`` units (held by active reservations) in a second, small one; and
        ``available`` units (units - reserved)."""
        now = now or timezone.now()
        value = ExpressionWrapper(F("price") * F("stock"), output_field=DecimalField(max_digits=24, decimal_places=2))
        totals = self.aggregate(
            widgets=Count("id"),
            active=Count("id", filter=Q(is_active=True)),
            units=Coalesce(Sum("stock"), 0),
            value=Coalesce(Sum(value), 0, output_field=DecimalField(max_digits=24, decimal_places=2)),
            low_stock=Count("id", filter=Q(is_active=True) & LowStock(now)),
        )
        totals["reserved"] = (
            ReservationItem.objects.holding(now=now)
            .filter(widget__in=self.values("pk"))
            .aggregate(total=Coalesce(Sum("quantity"), 0))["total"]
        )
        totals["available"] = totals["units"] - totals["reserved"]
        return totals

    def most_urgent_low_stock(self, limit: int, now=None):
        """Active low-stock widgets, furthest below their reorder level (by available
        units) first, annotated with ``reserved``. The candidates are the widgets low by
        stock alone (``stock - reorder_level <= 0``, read from the
        ``widget_low_stock_urgency`` index) and the few that reservations hold units of;
        only those are sorted."""
        now = now or timezone.now()
        held = ReservationItem.objects.holding(now=now).values("widget_id")
        return (
            self.filter(is_active=True)
            .alias(stock_headroom=F("stock") - F("reorder_level"))
            .filter(Q(stock_headroom__lte=0) | Q(pk__in=held))
            .with_availability(now)
            .alias(headroom=F("available") - F("reorder_level"))
            .filter(headroom__lte=0)
            .select_related("category")
            .order_by("headroom", "id")[:limit]
        )

    def over_reserved(self, now=None):
        """Widgets with more units reserved than in stock (available < 0): none, ever.
        Only widgets that reservations hold units of are summed."""
        now = now or timezone.now()
        held = ReservationItem.objects.holding(now=now).values("widget_id")
        return self.filter(pk__in=held).alias(_over=F("stock") - reserved_units(now)).filter(_over__lt=0)

    def ledger_mismatches(self):
        """Widgets whose stock is not the sum of their ledger, or whose newest
        movement's ``stock_after`` differs from their stock. Empty when all is well."""
        newest = StockMovement.objects.filter(widget=OuterRef("pk")).order_by("-id")
        return self.annotate(
            ledger_sum=Coalesce(
                Subquery(
                    StockMovement.objects.filter(widget=OuterRef("pk"))
                    .values("widget")
                    .annotate(total=Sum("delta"))
                    .values("total")
                ),
                0,
            ),
            newest_stock_after=Subquery(newest.values("stock_after")[:1]),
        ).filter(~Q(stock=F("ledger_sum")) | (Q(newest_stock_after__isnull=False) & ~Q(newest_stock_after=F("stock"))))


class Widget(models.Model):
    sku = SkuField(max_length=32, unique=True, validators=[sku_validator])
    name = models.CharField(max_length=100, validators=[one_line])
    description = models.TextField(blank=True, validators=[multi_line])
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.PROTECT, related_name="widgets")
    price = models.DecimalField(max_digits=12, decimal_places=2, default=0, validators=[MinValueValidator(0)])
    stock = models.IntegerField(default=0, editable=False)
    reorder_level = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # Bumped on every write (stock adjustments included); the API's ETag is built from it.
    version = models.PositiveIntegerField(default=1, editable=False)
    # Units of reservations whose stored status is ``active`` (an expired one still counts
    # until its expiry is recorded), kept by ``widgets.services`` under the row lock. It is
    # never less than ``reserved``, so ``stock - held >= n`` lets a decrease of n be checked
    # by the UPDATE itself (the one-statement adjust, docs/performance.md).
    held = models.PositiveIntegerField(default=0, db_default=0, editable=False)

    objects = WidgetQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(stock__gte=0), name="widget_stock_not_negative"),
            models.CheckConstraint(condition=Q(price__gte=0), name="widget_price_not_negative"),
            models.CheckConstraint(condition=Q(reorder_level__gte=0), name="widget_reorder_level_not_negative"),
        ]
        indexes = [
            models.Index(fields=["name"]),
            models.Index(fields=["stock"]),
            # The staff dashboard's "needs reordering" list: its top rows without a sort.
            models.Index(
                F("stock") - F("reorder_level"), F("id"), name="widget_low_stock_urgency", condition=Q(is_active=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"

    # ``reserved`` is not a column: ``Widget.objects.with_availability()`` annotates it
    # (and the services set it on the widgets they return), read by these two.
    @property
    def available(self) -> int:
        """Units that can still be sold or reserved: stock - reserved."""
        return self.stock - self.reserved

    @property
    def low_stock(self) -> bool:
        return self.available <= self.reorder_level


class AppendOnlyQuerySet(models.QuerySet):
    """History (the ledger, the change log): rows are inserted, never rewritten or removed."""

    def update(self, **kwargs):
        raise TypeError(f"{self.model._meta.verbose_name_plural.capitalize()} are append-only and cannot be updated.")

    def delete(self):
        raise TypeError(f"{self.model._meta.verbose_name_plural.capitalize()} are append-only and cannot be deleted.")

    update.queryset_only = True
    delete.queryset_only = True


class StockMovementQuerySet(AppendOnlyQuerySet):
    def daily_flow(self, *, days: int, today):
        """Units received and units sold per day for the ``days`` days up to ``today``
        (a date, UTC), one row per day with movements: ``{"day", "received", "sold"}``;
        ``sold`` is a positive number of units. One grouped query."""
        since = datetime.combine(today - timedelta(days=days - 1), time.min, tzinfo=timezone.get_current_timezone())
        reason = StockMovement.Reason
        return (
            self.filter(created_at__gte=since, reason__in=[reason.RECEIVED, reason.SOLD])
            .annotate(day=TruncDate("created_at"))
            .values("day")
            .annotate(
                received=Coalesce(Sum("delta", filter=Q(reason=reason.RECEIVED)), 0),
                sold=Coalesce(-Sum("delta", filter=Q(reason=reason.SOLD)), 0),
            )
            .order_by("day")
        )

    def stock_history(self, *, widget_id: int, limit: int) -> list[tuple]:
        """The newest ``limit`` ``(created_at, stock_after)`` points of one widget's
        ledger, oldest first (served by the ``movement_widget_newest`` index)."""
        newest = self.filter(widget_id=widget_id).order_by("-id").values_list("created_at", "stock_after")[:limit]
        return list(reversed(newest))


class StockMovement(models.Model):
    class Reason(models.TextChoices):
        INITIAL = "initial", "Initial stock"
        RECEIVED = "received", "Received"
        SOLD = "sold", "Sold"
        RETURNED = "returned", "Returned"
        DAMAGED = "damaged", "Damaged"
        CORRECTION = "correction", "Correction"

    widget = models.ForeignKey(Widget, on_delete=models.PROTECT, related_name="movements")
    delta = models.IntegerField()
    reason = models.CharField(max_length=20, choices=Reason.choices)
    note = models.CharField(max_length=255, blank=True, validators=[one_line])
    stock_after = models.IntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="stock_movements",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = StockMovementQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(delta=0), name="movement_delta_not_zero"),
            models.CheckConstraint(condition=Q(stock_after__gte=0), name="movement_stock_after_not_negative"),
        ]
        indexes = [models.Index(fields=["widget", "-id"], name="movement_widget_newest")]

    def __str__(self) -> str:
        return f"{self.widget_id} {self.delta:+d} ({self.reason})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("Stock movements are append-only and cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Stock movements are append-only and cannot be deleted.")


class ReservationQuerySet(models.QuerySet):
    def holding(self, now=None):
        """Reservations that hold stock at ``now``: active and not yet expired."""
        return self.filter(status=Reservation.Status.ACTIVE, expires_at__gt=now or timezone.now())

    def in_state(self, state: str, now=None):
        """Reservations whose computed ``state`` (see ``Reservation.state``) is ``state``."""
        now = now or timezone.now()
        if state == Reservation.EXPIRED:
            # Recorded by the sweep, or not yet: the API shows both as expired.
            return self.filter(
                Q(status=Reservation.Status.EXPIRED) | Q(status=Reservation.Status.ACTIVE, expires_at__lte=now)
            )
        if state == Reservation.Status.ACTIVE:
            return self.holding(now=now)
        return self.filter(status=state)

    def expired_unrecorded(self, now=None):
        """Active reservations past ``expires_at`` that the sweep has not recorded yet
        (``services.record_expired_reservations``); the ``reservation_status_expiry``
        index answers it, oldest expiry first."""
        return self.filter(status=Reservation.Status.ACTIVE, expires_at__lte=now or timezone.now())


class Reservation(models.Model):
    """Units of one or more widgets held for an order until ``expires_at``, then either
    committed (sold: one ``sold`` movement per item) or released.

    ``status`` stores what was decided (active, committed, released); whether an active
    reservation has expired is read from the clock (``state``), so expiry needs no job
    and an expired reservation stops holding stock at that very moment. Later the
    worker's sweep *records* the expiry (``services.record_expired_reservations``): it
    stores ``expired`` and sends ``reservation.expired``. Stored or not, the API shows
    ``expired`` from the first moment. Written only by ``widgets.services``.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        COMMITTED = "committed"
        RELEASED = "released"
        # Stored by the sweep only, some time after expires_at; before that an expired
        # reservation is stored as active and ``state`` reads the clock.
        EXPIRED = "expired"

    EXPIRED = Status.EXPIRED
    # Every status the API shows.
    STATES = Status.values

    reference = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="reservations"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    # When it was committed or released; null while active or expired (recorded or not).
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ReservationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["active", "committed", "released", "expired"]),
                name="reservation_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "expired"], closed_at__isnull=True)
                | (~Q(status__in=["active", "expired"]) & Q(closed_at__isnull=False)),
                name="reservation_closed_at_iff_closed",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__gt=F("created_at")), name="reservation_expires_after_creation"
            ),
        ]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="reservation_newest"),
            models.Index(fields=["reference"], name="reservation_reference"),
            # Also the sweep's query: status = 'active' AND expires_at <= now, oldest first.
            models.Index(fields=["status", "expires_at"], name="reservation_status_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.reference} ({self.state})"

    @property
    def state(self) -> str:
        """``status``, or ``expired`` for an active reservation whose time is up."""
        if self.status == self.Status.ACTIVE and self.expires_at <= timezone.now():
            return self.EXPIRED
        return self.status


class ReservationItemQuerySet(models.QuerySet):
    def holding(self, now=None):
        """Items of reservations that hold stock at ``now`` (active, not expired)."""
        return self.filter(
            reservation__status=Reservation.Status.ACTIVE, reservation__expires_at__gt=now or timezone.now()
        )


class ReservationItem(models.Model):
    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="items")
    widget = models.ForeignKey(Widget, on_delete=models.PROTECT, related_name="reservation_items")
    quantity = models.PositiveIntegerField(validators=[MinValueValidator(1)])

    objects = ReservationItemQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=1), name="reservation_item_quantity_positive"),
            models.UniqueConstraint(fields=["reservation", "widget"], name="reservation_item_widget_once"),
        ]
        # A widget's reserved units: its items, each joined to its reservation by id.
        indexes = [models.Index(fields=["widget", "reservation"], name="reservation_item_widget")]

    def __str__(self) -> str:
        return f"{self.quantity} x widget {self.widget_id}"


def token_digest(raw_key: str) -> str:
    """Keyed digest of an API key; the key itself is never stored."""
    return hmac.new(settings.TOKEN_HMAC_KEY.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def issue(self, *, user, name: str = "", expires_in_days: int | None = None, read_only=False):
        """Create a token and return ``(token, raw_key)``; the raw key is never seen again."""
        raw_key = f"{ApiToken.KEY_MARKER}{secrets.token_urlsafe(32)}"
        if expires_in_days is None:
            expires_in_days = settings.TOKEN_DEFAULT_EXPIRY_DAYS
        token = self.create(
            user=user,
            name=name,
            prefix=raw_key[: ApiToken.PREFIX_LENGTH],
            digest=token_digest(raw_key),
            read_only=read_only,
            expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None,
        )
        return token, raw_key

    def revoke(self) -> int:
        """Revoke the tokens not revoked yet; an earlier revocation keeps its time."""
        return self.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


class ApiToken(models.Model):
    """A named API credential. Several per user; stored as an HMAC digest only."""

    KEY_MARKER = "wgi_"
    PREFIX_LENGTH = 12

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, validators=[one_line])
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    read_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def matches(self, raw_key: str) -> bool:
        return hmac.compare_digest(self.digest, token_digest(raw_key))


class ChangeLogEntry(models.Model):
    """Who created, changed or deleted which widget or category, and what changed; and
    who reserved stock (create), committed, released or extended a reservation (update
    of its ``status`` or ``expires_at``).

    Written by ``widgets.services`` in the same transaction as the change itself. Stock
    adjustments are not here: the ledger is their log. Like the ledger, append-only.
    """

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        DELETE = "delete"

    class ObjectType(models.TextChoices):
        WIDGET = "widget"
        CATEGORY = "category"
        RESERVATION = "reservation"

    timestamp = models.DateTimeField(auto_now_add=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="change_log_entries",
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    object_type = models.CharField(max_length=20, choices=ObjectType.choices)
    # A plain number, not a foreign key: the entry outlives a deleted object.
    object_id = models.PositiveBigIntegerField()
    object_repr = models.CharField(max_length=200)
    # {field: [old, new]}; old is null on create, new is null on delete.
    changes = models.JSONField(default=dict)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        verbose_name = "change log entry"
        verbose_name_plural = "change log entries"
        indexes = [
            models.Index(fields=["-timestamp", "-id"], name="changelog_newest"),
            models.Index(fields=["object_type", "object_id"], name="changelog_object"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_id} ({self.object_repr})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("Change log entries are append-only and cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Change log entries are append-only and cannot be deleted.")


class IdempotencyKeyQuerySet(models.QuerySet):
    def expired(self, *, older_than: timedelta):
        return self.filter(created_at__lt=timezone.now() - older_than)


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key and the response its first request got.

    Written in the same transaction as the request's effect: the key is stored if and
    only if the effect is, so a replay can never describe something that did not happen.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=2048)
    # SHA-256 of the request body: the same key with another body is a client error.
    fingerprint = models.CharField(max_length=64)
    # Null only inside the first request's own, uncommitted transaction.
    response_status = models.PositiveSmallIntegerField(null=True)
    response_headers = models.JSONField(default=dict)
    response_body = models.BinaryField(default=bytes)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = IdempotencyKeyQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}] -> {self.response_status}"
