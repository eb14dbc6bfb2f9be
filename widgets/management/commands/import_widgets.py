from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from widgets import services
from widgets.csv_io import RowError, read_widget_rows

ERRORS_SHOWN = 200
CHANGES_SHOWN = 50


class Command(BaseCommand):
    help = (
        "Create or update widgets from a CSV file (columns: sku, name, description, category, "
        "price, reorder_level, is_active, stock, version). Every row is checked first; then all rows are "
        "applied in one transaction, or none. A row whose version no longer matches (the widget changed "
        "since the export) is refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path of a UTF-8 CSV file with a header row.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Check the file and show what would change; write nothing."
        )
        parser.add_argument(
            "--stock-corrections",
            action="store_true",
            help="Let rows without a version set the stock of existing widgets (recorded as corrections). "
            "Without it, such a row is refused: the file may predate changes to the stock.",
        )

    def handle(self, *args, file, dry_run, stock_corrections, **options):
        quiet = options["verbosity"] == 0
        try:
            with open(file, encoding="utf-8-sig", newline="") as lines:
                parsed = read_widget_rows(tqdm(lines, desc="Checking", unit=" rows", disable=quiet, file=self.stderr))
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        except UnicodeDecodeError:
            raise CommandError(f"{file} is not UTF-8 text.") from None
        if parsed.errors:
            self._refuse(file, parsed.errors)

        with tqdm(desc="Writing", unit=" rows", disable=quiet or dry_run, file=self.stderr) as bar:
            try:
                summary = services.import_widgets(
                    rows=parsed.rows, dry_run=dry_run, progress=bar.update, stock_corrections=stock_corrections
                )
            except services.StaleImport as exc:
                self._refuse(file, [RowError(*problem) for problem in exc.problems])
            except services.InventoryError as exc:
                raise CommandError(exc.detail) from None

        if dry_run:
            for sku in summary.created[:CHANGES_SHOWN]:
                self.stdout.write(f"create {sku}")
            for sku, fields in list(summary.updated.items())[:CHANGES_SHOWN]:
                self.stdout.write(f"update {sku}: {', '.join(fields)}")
            for sku, (old, new) in list(summary.stock_changes.items())[:CHANGES_SHOWN]:
                self.stdout.write(f"stock  {sku}: {old} -> {new}")
        verb = "Would import" if dry_run else "Imported"
        self.stdout.write(
            f"{verb}: {len(summary.created)} created, {len(summary.updated)} updated, "
            f"{len(summary.stock_changes)} stock corrections, {summary.unchanged} unchanged."
            + (" Dry run: nothing was written." if dry_run else "")
        )

    def _refuse(self, file, errors):
        for error in errors[:ERRORS_SHOWN]:
            self.stderr.write(str(error))
        if len(errors) > ERRORS_SHOWN:
            self.stderr.write(f"... and {len(errors) - ERRORS_SHOWN} more.")
        raise CommandError(f"{len(errors)} error(s) in {file}; nothing was imported.")
