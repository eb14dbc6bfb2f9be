"""One set of input rules at every door (docs/input-rules.md).

The same values go through the API, the admin's forms (over HTTP, as a signed-in staff
user) and the CSV import, and every door must give the same verdict: accepted everywhere
(and stored as the same value) or refused everywhere, with nothing changed by a refusal.
"""

import csv
import io

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.test import Client

from tests.conftest import make_user, postgres_only
from widgets import services
from widgets.models import Category, ChangeLogEntry, StockMovement, Widget

pytestmark = pytest.mark.django_db

ACCEPTED, REFUSED = True, False


def snapshot():
    """Everything a write may touch."""
    return (
        list(Widget.objects.order_by("id").values()),
        list(Category.objects.order_by("id").values()),
        list(StockMovement.objects.order_by("id").values()),
        list(ChangeLogEntry.objects.order_by("id").values()),
    )


@pytest.fixture
def staff():
    client = Client()
    client.force_login(make_user("manager", is_staff=True))
    return client


# --- Doors that create a widget -------------------------------------------------------------------
# Each takes the widget's fields as text and answers the widget it created, or None.


def widget_via_api(doors, fields):
    response = doors["api"].post("/api/widgets/", fields, format="json")
    assert response.status_code in (201, 400), response.content
    return Widget.objects.get(pk=response.json()["id"]) if response.status_code == 201 else None


def widget_via_admin(doors, fields):
    form = {
        "sku": "",
        "name": "",
        "description": "",
        "category": "",
        "price": "0",
        "reorder_level": "0",
        "is_active": "on",
        "movements-TOTAL_FORMS": "0",
        "movements-INITIAL_FORMS": "0",
        **fields,
    }
    before = set(Widget.objects.values_list("pk", flat=True))
    response = doors["admin"].post("/admin/widgets/widget/add/", form)
    assert response.status_code in (200, 302), response.status_code
    if response.status_code == 200:  # the form again, with its errors
        assert "errornote" in response.content.decode()
        return None
    return Widget.objects.exclude(pk__in=before).get()


def widget_via_csv(doors, fields):
    row = {"sku": "", "name": "", "description": "", **fields}
    path = doors["tmp_path"] / "widgets.csv"
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(list(row))
        writer.writerow(list(row.values()))
    before = set(Widget.objects.values_list("pk", flat=True))
    try:
        call_command("import_widgets", str(path), stdout=io.StringIO(), stderr=io.StringIO(), verbosity=0)
    except CommandError:
        return None
    return Widget.objects.exclude(pk__in=before).get()


WIDGET_DOORS = {"api": widget_via_api, "admin": widget_via_admin, "csv": widget_via_csv}


@pytest.fixture
def doors(manager, staff, tmp_path):
    return {"api": manager, "admin": staff, "tmp_path": tmp_path}


WIDGET_VALUES = [
    # SKUs: checked as typed, then upper-cased; nothing becomes valid by case folding.
    ("sku", "BOLT-1", ACCEPTED, "BOLT-1"),
    ("sku", "bolt-1", ACCEPTED, "BOLT-1"),
    ("sku", "\ufb00", REFUSED, None),  # 'ﬀ'.upper() == 'FF'
    ("sku", "stra\u00dfe", REFUSED, None),  # 'straße'.upper() == 'STRASSE'
    ("sku", "w\u0131dget", REFUSED, None),  # 'wıdget'.upper() == 'WIDGET'
    ("sku", " BOLT-1", REFUSED, None),
    ("sku", "BOLT-1\n", REFUSED, None),
    ("sku", "B" * 33, REFUSED, None),
    ("sku", "B" * 32, ACCEPTED, "B" * 32),
    # One line of text: visible, no control characters, kept as typed.
    ("name", "Bolt", ACCEPTED, "Bolt"),
    ("name", "  Bolt, spaced  ", ACCEPTED, "  Bolt, spaced  "),
    ("name", "Écrou ½", ACCEPTED, "Écrou ½"),
    ("name", "tab\there", REFUSED, None),
    ("name", "line\nbreak", REFUSED, None),
    ("name", "bell\x07", REFUSED, None),
    ("name", "next line\x85", REFUSED, None),
    ("name", "nul\x00", REFUSED, None),
    ("name", "   ", REFUSED, None),
    ("name", "", REFUSED, None),
    ("name", "n" * 101, REFUSED, None),
    ("name", "n" * 100, ACCEPTED, "n" * 100),
    # A block of text: tabs and line breaks allowed, other control characters not.
    ("description", "two\nlines\tand a tab", ACCEPTED, "two\nlines\tand a tab"),
    ("description", "", ACCEPTED, ""),
    ("description", "   ", REFUSED, None),
    ("description", "escape\x1b[31m", REFUSED, None),
    ("description", "nul\x00", REFUSED, None),
]


@pytest.mark.parametrize("field, value, verdict, stored", WIDGET_VALUES)
def test_every_door_gives_a_widget_field_the_same_verdict(doors, manager, field, value, verdict, stored):
    defaults = {"sku": "RULE-1", "name": "Rule", "description": ""}
    results = {}
    for name, door in WIDGET_DOORS.items():
        before = snapshot()
        widget = door(doors, {**defaults, field: value})
        results[name] = widget is not None
        if widget is None:
            assert snapshot() == before, f"{name} refused {value!r} but changed something"
            continue
        assert getattr(widget, field) == stored, name
        # What one door stored, the API reads back and takes again unchanged (GET -> PUT).
        shown = manager.get(f"/api/widgets/{widget.pk}/").json()
        assert manager.put(f"/api/widgets/{widget.pk}/", shown, format="json").status_code == 200, name
        services.delete_widget(widget=widget)  # the next door creates it afresh

    assert results == {name: verdict for name in WIDGET_DOORS}


def test_a_csv_row_cannot_reach_an_existing_widget_by_case_folding(doors, create_widget):
    existing = create_widget(sku="WIDGET", name="Original")
    before = snapshot()

    assert widget_via_csv(doors, {"sku": "w\u0131dget", "name": "Hijacked"}) is None

    assert snapshot() == before
    assert Widget.objects.get(pk=existing["id"]).name == "Original"


# --- Category names --------------------------------------------------------------------------


def category_via_api(doors, name):
    response = doors["api"].post("/api/categories/", {"name": name}, format="json")
    assert response.status_code in (201, 400), response.content
    return Category.objects.get(pk=response.json()["id"]) if response.status_code == 201 else None


def category_via_admin(doors, name):
    response = doors["admin"].post("/admin/widgets/category/add/", {"name": name, "description": ""})
    assert response.status_code in (200, 302)
    return Category.objects.get(name=name) if response.status_code == 302 else None


@pytest.mark.parametrize(
    "name, verdict",
    [
        ("Hand Tools", ACCEPTED),
        ("  Spaced 2 ", ACCEPTED),
        ("Outils à main", ACCEPTED),
        ("\u00e9", REFUSED),  # slugifies to 'e' by transliteration: no letter A-Z typed
        ("\u00bd", REFUSED),  # slugifies to '12'
        ("---", REFUSED),
        ("   ", REFUSED),
        ("tab\tTools", REFUSED),
        ("Tools\n", REFUSED),
        ("T" * 101, REFUSED),
    ],
)
def test_every_door_gives_a_category_name_the_same_verdict(doors, name, verdict):
    results = {}
    for door_name, door in {"api": category_via_api, "admin": category_via_admin}.items():
        before = snapshot()
        category = door(doors, name)
        results[door_name] = category is not None
        if category is None:
            assert snapshot() == before, door_name
            continue
        assert category.name == name
        services.delete_category(category=category)

    assert results == {"api": verdict, "admin": verdict}


# --- Movements: each reason's sign ----------------------------------------------------------


def adjust_via_api(doors, widget_id, delta, reason):
    response = doors["api"].post(f"/api/widgets/{widget_id}/adjust/", {"delta": delta, "reason": reason}, format="json")
    assert response.status_code in (201, 400), response.content
    if response.status_code == 400:
        assert set(response.json()) <= {"delta", "reason"}, response.json()  # names the field
    return response.status_code == 201


def adjust_via_batch(doors, widget_id, delta, reason):
    item = {"widget": widget_id, "delta": delta, "reason": reason}
    response = doors["api"].post("/api/adjustments/", {"items": [item]}, format="json")
    assert response.status_code in (201, 400), response.content
    if response.status_code == 400:
        body = response.json()
        assert (body["index"], body["field"] in {"delta", "reason"}) == (0, True), body
        assert set(body) >= {"detail", "code", "index"}
    return response.status_code == 201


def adjust_via_admin(doors, widget_id, delta, reason):
    response = doors["admin"].post(
        f"/admin/widgets/widget/{widget_id}/adjust/", {"delta": str(delta), "reason": reason}
    )
    assert response.status_code in (200, 302)
    return response.status_code == 302


@pytest.mark.parametrize(
    "reason, delta, verdict",
    [
        ("received", 5, ACCEPTED),
        ("received", -5, REFUSED),
        ("returned", 1, ACCEPTED),
        ("returned", -1, REFUSED),
        ("sold", -1, ACCEPTED),
        ("sold", 3, REFUSED),
        ("damaged", -2, ACCEPTED),
        ("damaged", 2, REFUSED),
        ("correction", -1, ACCEPTED),
        ("correction", 2, ACCEPTED),
        ("initial", 1, REFUSED),
        ("sold", 0, REFUSED),
    ],
)
def test_every_door_allows_each_reason_only_its_sign(doors, create_widget, reason, delta, verdict):
    results = {}
    for name, door in {"api": adjust_via_api, "batch": adjust_via_batch, "admin": adjust_via_admin}.items():
        widget = create_widget(stock=10)
        before = snapshot()
        results[name] = door(doors, widget["id"], delta, reason)
        if results[name]:
            assert Widget.objects.get(pk=widget["id"]).stock == 10 + delta
        else:
            assert snapshot() == before, name

    assert results == {"api": verdict, "batch": verdict, "admin": verdict}


@pytest.mark.parametrize("reason, delta", [("received", -5), ("sold", 3), ("initial", 1)])
def test_the_service_itself_refuses_a_wrong_sign(create_widget, reason, delta):
    """Every door above asks first; the service checks again, so none can skip the rule."""
    widget = create_widget(stock=10)
    before = snapshot()

    with pytest.raises(services.InvalidMovement):
        services.adjust_stock(widget_id=widget["id"], delta=delta, reason=reason)
    with pytest.raises(services.BatchItemError):
        services.adjust_stock_batch(items=[{"widget": widget["id"], "delta": delta, "reason": reason}])

    assert snapshot() == before


@postgres_only
@pytest.mark.parametrize("reason, delta", [("received", -5), ("returned", -1), ("sold", 3), ("damaged", 2)])
def test_postgresql_refuses_a_wrong_sign_written_past_the_service(create_widget, reason, delta):
    """The database's guard behind the service (migration 0008): a movement written directly,
    bypassing check_movement, is refused by PostgreSQL's CHECK constraint."""
    widget = Widget.objects.get(pk=create_widget(stock=10)["id"])

    with pytest.raises(IntegrityError, match="movement_reason_sign"), transaction.atomic():
        StockMovement.objects.create(widget=widget, delta=delta, reason=reason, stock_after=10 + delta)

    assert widget.movements.count() == 1
