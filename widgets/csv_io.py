"""Widgets as CSV: the one column layout that export writes and import reads.

Export and import share ``COLUMNS``, so a file exported from the API or the admin
imports back without changing anything; text that a spreadsheet would run as a formula
goes out behind an apostrophe and comes back without it. Reading validates every row and
collects every error (row number and column) before anything is written; applying a valid
file is ``services.import_widgets``.

Each cell obeys the same rules as the API and the admin: SKUs go through
``validators.normalize_sku`` (checked as typed, then upper-cased), text cells are cleaned by
their model field (its validators: no control characters, not only whitespace, the length).
The export carries each widget's ``version``, so that importing an old file is refused
instead of reverting what changed since (``services.import_widgets``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.text import slugify

from .models import Category, Widget
from .services import MAX_STOCK
from .validators import CONTROL, normalize_sku

COLUMNS = ["sku", "name", "description", "category", "price", "reorder_level", "is_active", "stock", "version"]
# Written by export after COLUMNS, for reading; import accepts and ignores them (what is
# reserved is decided by reservations, not by a file).
EXPORT_ONLY_COLUMNS = ["reserved", "available"]
REQUIRED_COLUMNS = ["sku", "name"]
TRUE_VALUES = {"true", "1", "yes"}
FALSE_VALUES = {"false", "0", "no"}
PRICE_MAX = Decimal("9999999999.99")  # max_digits=12, decimal_places=2
EXPORT_CHUNK = 2000

_control_re = re.compile(f"[{CONTROL}]")
TEXT_COLUMNS = ("name", "description")  # cleaned by the model field of the same name

# Spreadsheets run a cell that starts with one of these as a formula when the file is opened
# (CSV injection: `=HYPERLINK(...)` in a widget's name would act in the staff's spreadsheet).
FORMULA_FIRST_CHARACTERS = frozenset("=+-@\t\r")
TEXT_MARK = "'"  # the spreadsheet convention for "this cell is text"


def protect_cell(text: str) -> str:
    """``text`` as it is written to a CSV file: behind ``TEXT_MARK`` when a spreadsheet
    would run it, or when import would take a mark off it (so every text comes back)."""
    if text[:1] in FORMULA_FIRST_CHARACTERS or _is_marked(text):
        return TEXT_MARK + text
    return text


def unprotect_cell(text: str) -> str:
    """The inverse of ``protect_cell``, for a cell read from a CSV file."""
    return text[1:] if _is_marked(text) else text


def _is_marked(text: str) -> bool:
    return text[:1] == TEXT_MARK and (text[1:2] in FORMULA_FIRST_CHARACTERS or text[1:2] == TEXT_MARK)


# --- Export ------------------------------------------------------------------------------


def export_rows(queryset) -> Iterator[list[Any]]:
    """The header, then one row per widget of ``queryset`` in its order. Rows are read
    with ``iterator()`` in chunks, so a million widgets never sit in memory at once."""
    yield COLUMNS + EXPORT_ONLY_COLUMNS
    if "reserved" not in queryset.query.annotations:
        queryset = queryset.with_availability()
    rows = queryset.values_list(
        "sku",
        "name",
        "description",
        "category__slug",
        "price",
        "reorder_level",
        "is_active",
        "stock",
        "version",
        "reserved",
    )
    for sku, name, description, category, price, reorder_level, is_active, stock, version, reserved in rows.iterator(
        chunk_size=EXPORT_CHUNK
    ):
        yield [
            sku,
            protect_cell(name),
            protect_cell(description),
            category or "",
            price,
            reorder_level,
            "true" if is_active else "false",
            stock,
            version,
            reserved,
            stock - reserved,
        ]


class _Echo:
    """A write-only file whose ``write`` hands back the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[list[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow(row)


# --- Import ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int  # as a spreadsheet numbers it: the header is row 1
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, {self.column}: {self.message}"


@dataclass(frozen=True)
class WidgetRow:
    """One valid data row: the SKU, the typed value of every other column present
    (``category`` is a ``Category`` or ``None``) and the widget's version when the file was
    exported (``None``: no version column, or an empty cell)."""

    row: int
    sku: str
    values: dict[str, Any]
    version: int | None = None


@dataclass
class ParsedFile:
    rows: list[WidgetRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def read_widget_rows(lines: Iterable[str]) -> ParsedFile:
    """Parse and validate a whole CSV file (an iterable of text lines, e.g. a file
    opened with ``newline=""``). Returns the valid rows and every error found."""
    result = ParsedFile()
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        result.errors.append(RowError(1, "header", f"The file is empty; expected the columns {', '.join(COLUMNS)}."))
        return result
    except csv.Error as exc:
        result.errors.append(RowError(1, "header", f"Not a readable CSV file: {exc}."))
        return result
    columns = [name.strip().lower().lstrip("\ufeff") for name in header]
    _check_header(columns, result.errors)
    ignored = [i for i, name in enumerate(columns) if name in EXPORT_ONLY_COLUMNS]
    if result.errors:
        return result

    raw_rows: list[tuple[int, list[str]]] = []
    try:
        for number, cells in enumerate(reader, start=2):
            if cells:  # a blank line is skipped, but still counts as a row
                raw_rows.append((number, cells))
    except csv.Error as exc:
        result.errors.append(RowError(reader.line_num, "file", f"Not a readable CSV file: {exc}."))
        return result

    # One query for every category the file names, by slug or by name (a category's
    # slug is its slugified name, so slugifying the cell matches either).
    wanted = {
        slugify(cells[columns.index("category")])
        for _, cells in raw_rows
        if "category" in columns and len(cells) == len(columns)
    }
    categories = {c.slug: c for c in Category.objects.filter(slug__in=wanted - {""})} if wanted else {}

    first_row_of_sku: dict[str, int] = {}
    for number, cells in raw_rows:
        if len(cells) != len(columns):
            result.errors.append(RowError(number, "row", f"Expected {len(columns)} cells, found {len(cells)}."))
            continue
        values = {name: cell for i, (name, cell) in enumerate(zip(columns, cells)) if i not in ignored}
        row = _validate_row(number, values, categories, result.errors)
        if row is None:
            continue
        if row.sku in first_row_of_sku:
            result.errors.append(RowError(number, "sku", f"Duplicate of row {first_row_of_sku[row.sku]}."))
            continue
        first_row_of_sku[row.sku] = number
        result.rows.append(row)
    if not raw_rows:
        result.errors.append(RowError(2, "file", "The file has a header but no rows."))
    return result


def _check_header(columns: list[str], errors: list[RowError]) -> None:
    for name in columns:
        if name in EXPORT_ONLY_COLUMNS:
            if columns.count(name) > 1:
                errors.append(RowError(1, name, "Column appears more than once."))
            continue
        if name not in COLUMNS:
            errors.append(RowError(1, name or "(blank)", f"Unknown column; the columns are {', '.join(COLUMNS)}."))
        elif columns.count(name) > 1:
            errors.append(RowError(1, name, "Column appears more than once."))
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            errors.append(RowError(1, name, "Required column is missing."))


def _validate_row(number: int, cells: dict[str, str], categories, errors: list[RowError]) -> WidgetRow | None:
    found: list[RowError] = []

    def fail(column: str, message: str) -> None:
        found.append(RowError(number, column, message))

    for column, text in cells.items():
        # The text columns say what is wrong with them below; a number or a name never
        # holds a control character (and PostgreSQL text cannot hold NUL).
        if column not in TEXT_COLUMNS and column != "sku" and _control_re.search(text):
            fail(column, "Contains a control character.")
    sku = ""
    try:
        sku = normalize_sku(cells["sku"])
    except ValidationError as exc:
        fail("sku", exc.messages[0])
    values: dict[str, Any] = {}
    for column in TEXT_COLUMNS:
        if column in cells:
            text = unprotect_cell(cells[column])
            try:
                values[column] = Widget._meta.get_field(column).clean(text, None)
            except ValidationError as exc:
                fail(column, " ".join(exc.messages))
    if "category" in cells:
        wanted = cells["category"].strip()
        values["category"] = categories.get(slugify(wanted)) if wanted else None
        if wanted and values["category"] is None:
            fail("category", f"No category with the slug or name '{wanted}'.")
    if "price" in cells:
        values["price"] = _decimal(cells["price"], "price", fail)
    for column in ("reorder_level", "stock"):
        if column in cells:
            values[column] = _whole_number(cells[column], column, fail)
    version = None
    if cells.get("version", "").strip():
        version = _whole_number(cells["version"], "version", fail)
    if "is_active" in cells:
        lowered = cells["is_active"].strip().lower()
        if lowered in TRUE_VALUES:
            values["is_active"] = True
        elif lowered in FALSE_VALUES:
            values["is_active"] = False
        else:
            fail("is_active", "Must be true or false.")
    if found:
        errors.extend(found)
        return None
    return WidgetRow(row=number, sku=sku, values=values, version=version)


def _decimal(text: str, column: str, fail) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        fail(column, "Must be a number, e.g. 12.50.")
        return None
    if not value.is_finite() or value < 0 or value > PRICE_MAX:
        fail(column, f"Must be between 0 and {PRICE_MAX}.")
    elif value.as_tuple().exponent < -2:
        fail(column, "At most 2 decimal places.")
    else:
        return value
    return None


def _whole_number(text: str, column: str, fail) -> int | None:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        fail(column, f"Must be a whole number from 0 to {MAX_STOCK}.")
        return None
    value = int(text)
    if value > MAX_STOCK:
        fail(column, f"Must be a whole number from 0 to {MAX_STOCK}.")
        return None
    return value
