import csv
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
        progress = tqdm(total=count, unit="widgets", disable=options["verbosity"] == 0, file=self.stderr)
        for offset in range(0, count, batch_size):
            size = min(batch_size, count - offset)
            self._insert_batch(rng, categories, sku_prefix, start + offset, size)
            progress.update(size)
        progress.close()
        self.stdout.write(f"Seeded {count} widgets ({Widget.objects.count()} in total).")

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
            "sku", "name", "description", "category_id", "price", "stock", "reorder_level",
            "is_active", "created_at", "updated_at", "version",
        ]
        rows = io.StringIO()
        writer = csv.writer(rows)
        for w in widgets:
            writer.writerow([
                w.sku, w.name, w.description, w.category_id, w.price, w.stock, w.reorder_level,
                "t" if w.is_active else "f", w.created_at.isoformat(), w.updated_at.isoformat(), w.version,
            ])
        rows.seek(0)
        with connection.cursor() as cursor:
            cursor.cursor.copy_expert(
                f"COPY {Widget._meta.db_table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", rows
            )
