import io
import random
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone
from tqdm import tqdm

from widgets.models import Category, StockMovement, Widget

CATEGORIES = ["Fasteners", "Hand Tools", "Power Tools", "Fittings", "Electrical", "Safety", "Adhesives", "Storage"]
ADJECTIVES = ["Steel", "Brass", "Compact", "Heavy-duty", "Precision", "Mini", "Pro", "Classic", "Coated", "Long"]
NOUNS = ["Spanner", "Bolt", "Hinge", "Bracket", "Clamp", "Socket", "Washer", "Drill Bit", "Fuse", "Gasket"]


class Command(BaseCommand):
    help = (
        "Add N deterministic demo widgets, each with its initial stock movement. "
        "Running it again with the same --seed adds the next N widgets of that series."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--if-empty", action="store_true", help="Do nothing if any widget exists.")

    def handle(self, *args, count, seed, batch_size, if_empty, **options):
        if count < 0 or batch_size < 1:
            raise CommandError("--count must be >= 0 and --batch-size >= 1.")
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
        # PostgreSQL takes COPY, an order of magnitude faster than INSERT for a million rows.
        insert = self._copy_batch if connection.vendor == "postgresql" else self._insert_batch
        progress = tqdm(total=count, unit="widgets", disable=options["verbosity"] == 0, file=self.stderr)
        for offset in range(0, count, batch_size):
            size = min(batch_size, count - offset)
            insert(self._generate(rng, categories, sku_prefix, start + offset, size))
            progress.update(size)
        progress.close()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # fresh statistics for the planner and estimates
                cursor.execute(f"ANALYZE {Widget._meta.db_table}, {StockMovement._meta.db_table}")
        self.stdout.write(f"Seeded {count} widgets ({Widget.objects.count()} in total).")

    @staticmethod
    def _generate(rng, categories, sku_prefix, first, size):
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
                )
            )
        return widgets

    # Bulk inserts bypass the service layer for speed; the initial movements keep the
    # ledger invariant exactly as create_widget would.

    @transaction.atomic
    def _insert_batch(self, widgets):
        Widget.objects.bulk_create(widgets, batch_size=len(widgets))
        StockMovement.objects.bulk_create(
            [
                StockMovement(widget=w, delta=w.stock, reason=StockMovement.Reason.INITIAL, stock_after=w.stock)
                for w in widgets
                if w.stock
            ],
            batch_size=len(widgets),
        )

    @transaction.atomic
    def _copy_batch(self, widgets):
        now = timezone.now().isoformat()
        widget_table, movement_table = Widget._meta.db_table, StockMovement._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [widget_table, len(widgets)],
            )
            for widget, (pk,) in zip(widgets, cursor.fetchall()):
                widget.pk = pk
            rows = "".join(
                f"{w.pk}\t{w.sku}\t{w.name}\t{w.description}\t{w.category_id}\t{w.price}\t{w.stock}\t"
                f"{w.reorder_level}\tt\t{now}\t{now}\t1\n"
                for w in widgets
            )
            cursor.copy_expert(
                f"COPY {widget_table} (id, sku, name, description, category_id, price, stock, "
                "reorder_level, is_active, created_at, updated_at, version) FROM STDIN",
                io.StringIO(rows),
            )
            movements = "".join(
                f"{w.pk}\t{w.stock}\t{StockMovement.Reason.INITIAL.value}\t\t{w.stock}\t{now}\n"
                for w in widgets
                if w.stock
            )
            cursor.copy_expert(
                f"COPY {movement_table} (widget_id, delta, reason, note, stock_after, created_at) FROM STDIN",
                io.StringIO(movements),
            )
