import csv
import io
import math
import random
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone
from tqdm import tqdm

from widgets.models import Category, StockMovement, Widget

CATEGORIES = ["Fasteners", "Hand Tools", "Power Tools", "Fittings", "Electrical", "Safety", "Adhesives", "Storage"]
ADJECTIVES = ["Steel", "Brass", "Compact", "Heavy-duty", "Precision", "Mini", "Pro", "Classic", "Coated", "Long"]
NOUNS = ["Spanner", "Bolt", "Hinge", "Bracket", "Clamp", "Socket", "Washer", "Drill Bit", "Fuse", "Gasket"]

# The history: a week's sales by weekday (Monday first; a busy Friday, a quiet Sunday),
# deliveries on weekdays only, and LOW_PERCENT of every 100 widgets waiting for a delivery
# today (spread out: numbers n with n * 37 mod 100 below it).
WEEKDAY_SALES = (1.0, 1.1, 1.1, 1.2, 1.5, 0.6, 0.25)
DAILY_UNITS = (0.3, 0.8, 1.5, 3, 6, 12)  # a widget's typical sales per day, slow to fast
LOW_PERCENT = 7  # of the widgets end at or below their reorder level
DEMO_USERS = ("warehouse", "shop")  # who received and who sold; they cannot log in


class Command(BaseCommand):
    help = (
        "Add N deterministic demo widgets with --days days of history (received, sold, returned, "
        "damaged; default 90): a weekly rhythm, and 7% of the widgets at or below their reorder "
        "level. --days 0 writes only each widget's initial stock (fast: benchmarks, large tables). "
        "Running it again with the same --seed adds the next N widgets of that series."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--days", type=int, default=90, help="Days of history (0 = initial stock only).")
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--if-empty", action="store_true", help="Do nothing if any widget exists.")

    def handle(self, *args, count, seed, days, batch_size, if_empty, **options):
        if count < 0 or batch_size < 1 or not 0 <= days <= 3650:
            raise CommandError("--count must be >= 0, --batch-size >= 1 and --days 0-3650.")
        if if_empty and Widget.objects.exists():
            self.stdout.write("Widgets exist already; not seeding.")
            return
        categories = [
            Category.objects.get_or_create(name=name, defaults={"description": f"Demo {name.lower()}"})[0]
            for name in CATEGORIES
        ]
        sku_prefix = f"S{seed}-"
        start = Widget.objects.filter(sku__startswith=sku_prefix).count()
        rng = random.Random(f"{seed}:{start}")
        progress = tqdm(total=count, unit="widgets", disable=options["verbosity"] == 0, file=self.stderr)
        users = self._demo_users() if days and count else None
        for offset in range(0, count, batch_size):
            size = min(batch_size, count - offset)
            if days:
                self._insert_history_batch(rng, categories, users, sku_prefix, start + offset, size, days, progress)
            else:
                self._insert_batch(rng, categories, sku_prefix, start + offset, size)
                progress.update(size)
        progress.close()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # fresh statistics: list counts are estimated from them
                cursor.execute(f"ANALYZE {Widget._meta.db_table}, {StockMovement._meta.db_table}")
        history = f" with {days} days of history" if days else ""
        self.stdout.write(f"Seeded {count} widgets{history} ({Widget.objects.count()} in total).")

    @transaction.atomic
    def _insert_batch(self, rng, categories, sku_prefix, first, size):
        now = timezone.now()
        widgets = []
        for number in range(first, first + size):
            stock = rng.choice([0, rng.randint(1, 20), rng.randint(20, 500)])
            widgets.append(
                Widget(
                    sku=f"{sku_prefix}{number:07d}",
                    name=f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {number}",
                    description="Demo widget",
                    category=rng.choice(categories),
                    price=Decimal(rng.randint(50, 50000)) / 100,
                    stock=stock,
                    reorder_level=rng.choice([0, 5, 10, 25]),
                    created_at=now,
                    updated_at=now,
                )
            )
        # Bulk inserts bypass the service layer for speed; the initial movements below
        # keep the ledger invariant exactly as create_widget would.
        if connection.vendor == "postgresql":
            self._copy_widgets(widgets)  # COPY is several times faster than INSERT
        else:
            Widget.objects.bulk_create(widgets, batch_size=size)
        # One INSERT ... SELECT: the movements never travel through Python.
        movement, widget = StockMovement._meta, Widget._meta
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {movement.db_table} (widget_id, delta, reason, note, stock_after, created_at) "
                f"SELECT id, stock, %s, '', stock, created_at FROM {widget.db_table} "
                "WHERE sku >= %s AND sku <= %s AND stock > 0 ORDER BY id",
                [StockMovement.Reason.INITIAL, widgets[0].sku, widgets[-1].sku],
            )

    @staticmethod
    def _copy_widgets(widgets):
        columns = [
            "sku",
            "name",
            "description",
            "category_id",
            "price",
            "stock",
            "reorder_level",
            "is_active",
            "created_at",
            "updated_at",
            "version",
        ]
        rows = io.StringIO()
        writer = csv.writer(rows)
        for w in widgets:
            writer.writerow(
                [
                    w.sku,
                    w.name,
                    w.description,
                    w.category_id,
                    w.price,
                    w.stock,
                    w.reorder_level,
                    "t" if w.is_active else "f",
                    w.created_at.isoformat(),
                    w.updated_at.isoformat(),
                    w.version,
                ]
            )
        rows.seek(0)
        with connection.cursor() as cursor:
            cursor.cursor.copy_expert(
                f"COPY {Widget._meta.db_table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", rows
            )

    # --- Demo data with a history ----------------------------------------------------------

    @staticmethod
    def _demo_users():
        users = {}
        for username in DEMO_USERS:
            user, created = get_user_model().objects.get_or_create(username=username)
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            users[username] = user.pk
        return users

    @transaction.atomic
    def _insert_history_batch(self, rng, categories, users, sku_prefix, first, size, days, progress):
        """Widgets and their ledgers, simulated day by day, written with a few bulk
        statements. Each widget's stock is the sum of its movements and each movement's
        stock_after the running total, as the services would have left them; movements are
        written in time order, so ids follow time as they do in real use."""
        now = timezone.now()
        first_day = timezone.localdate(now) - timedelta(days=days)
        widgets, ledgers = [], []
        for number in range(first, first + size):
            widget, ledger = self._simulate(rng, number, first_day, days, now, low=number * 37 % 100 < LOW_PERCENT)
            widget.update(
                sku=f"{sku_prefix}{number:07d}",
                name=f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {number}",
                category_id=rng.choice(categories).pk,
            )
            widgets.append(widget)
            ledgers.append(ledger)
            progress.update(1)
        columns = [
            "sku",
            "name",
            "description",
            "category_id",
            "price",
            "stock",
            "reorder_level",
            "is_active",
            "created_at",
            "updated_at",
            "version",
        ]
        _insert(
            Widget,
            columns,
            [
                [
                    w["sku"],
                    w["name"],
                    "Demo widget",
                    w["category_id"],
                    w["price"],
                    w["stock"],
                    w["reorder_level"],
                    True,
                    w["created_at"],
                    w["updated_at"],
                    1,
                ]
                for w in widgets
            ],
        )
        ids = dict(
            Widget.objects.filter(sku__gte=widgets[0]["sku"], sku__lte=widgets[-1]["sku"]).values_list("sku", "id")
        )
        movements = sorted(
            (
                (at, ids[widget["sku"]], delta, reason, note, stock_after, users.get(by))
                for widget, ledger in zip(widgets, ledgers)
                for at, delta, reason, note, stock_after, by in ledger
            ),
            key=lambda row: (row[0], row[1]),
        )
        _insert(
            StockMovement,
            ["created_at", "widget_id", "delta", "reason", "note", "stock_after", "created_by_id"],
            movements,
        )

    @staticmethod
    def _simulate(rng, number, first_day, days, now, *, low):
        """One widget's history from ``first_day`` up to ``now``:
        ``(widget fields, [(at, delta, reason, note, stock_after, user)])``."""
        Reason = StockMovement.Reason
        rate = rng.choice(DAILY_UNITS) * rng.uniform(0.7, 1.3)
        reorder_level = max(5, 5 * round(rate * 7 / 5))  # about a week of sales
        order_size = max(10, 10 * round(rate * 21 / 10))  # about three weeks of sales
        stock = reorder_level + rng.randint(order_size // 2, order_size)
        price = Decimal(rng.randint(50, 50000)) / 100

        def at(day, hour, minute=None):
            moment = datetime.combine(
                first_day + timedelta(days=day), time(hour, rng.randint(0, 59) if minute is None else minute)
            )
            return timezone.make_aware(moment)

        created_at = at(0, 7, 0)
        ledger = [(created_at, stock, Reason.INITIAL, "Opening stock", stock, "warehouse")]

        def move(when, delta, reason, note, user):
            nonlocal stock
            if when > now:  # later today: has not happened yet
                return
            stock += delta
            ledger.append((when, delta, reason, note, stock, user))

        arrives = None  # the day an order placed earlier is delivered
        for day in range(days + 1):  # the last day is today, up to now
            weekday = (first_day + timedelta(days=day)).weekday()
            if arrives is not None and day >= arrives:
                move(at(day, 8), order_size, Reason.RECEIVED, f"PO {40000 + number * 7 + day}", "warehouse")
                arrives = None
            sold = min(stock, _poisson(rng, rate * WEEKDAY_SALES[weekday]))
            orders = 1 if sold < 4 else rng.randint(1, 3)
            for order, hour in zip(range(orders), sorted(rng.sample(range(9, 18), orders))):
                units = sold // orders + (1 if order < sold % orders else 0)
                if units:
                    move(at(day, hour), -units, Reason.SOLD, f"Order {100000 + number * 131 + day * 3 + order}", "shop")
            if rng.random() < 0.03:
                move(at(day, 18), rng.randint(1, 2), Reason.RETURNED, "Customer return", "shop")
            if stock and rng.random() < 0.01:
                move(at(day, 19), -1, Reason.DAMAGED, "Damaged in storage", "warehouse")
            if stock <= reorder_level and arrives is None:
                arrives = _after_working_days(first_day, day, rng.randint(2, 5))  # the reorder's lead time
        # Today's picture: LOW_PERCENT of the widgets wait for a delivery, the others have stock.
        last = min(now, ledger[-1][0] + timedelta(seconds=1))
        if low and stock > reorder_level:
            move(last, -(stock - rng.randint(0, reorder_level)), Reason.SOLD, "Order for a trade customer", "shop")
        elif not low and stock <= reorder_level:
            move(last, order_size, Reason.RECEIVED, f"PO {40000 + number * 7 + days}", "warehouse")
        widget = {
            "price": price,
            "stock": stock,
            "reorder_level": reorder_level,
            "created_at": created_at,
            "updated_at": ledger[-1][0],
        }
        return widget, ledger


def _after_working_days(first_day, day: int, count: int) -> int:
    """The day (counted from ``first_day``) ``count`` working days after ``day``: deliveries
    come Monday to Friday."""
    while count:
        day += 1
        count -= (first_day + timedelta(days=day)).weekday() < 5
    return day


def _poisson(rng, mean: float) -> int:
    """A Poisson-distributed count (Knuth's method; the means here are small)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _insert(model, columns, rows):
    """Rows straight into the model's table: COPY on PostgreSQL, executemany elsewhere.
    Not ``bulk_create``: it would overwrite the back-dated ``created_at`` (auto_now_add)."""
    table = model._meta.db_table
    if connection.vendor == "postgresql":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow(
                [
                    ""
                    if v is None
                    else ("t" if v is True else "f" if v is False else v.isoformat() if isinstance(v, datetime) else v)
                    for v in row
                ]
            )
        buffer.seek(0)
        text = [c for c in columns if c in ("note", "description", "name")]
        with connection.cursor() as cursor:
            cursor.cursor.copy_expert(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL ({', '.join(text)}))",
                buffer,
            )
        return
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            [
                [adapt(v) if isinstance(v, datetime) else str(v) if isinstance(v, Decimal) else v for v in row]
                for row in rows
            ],
        )
