"""The serializer speed-ups (widgets/api/fast_fields.py) change nothing but speed.

Every serializer that uses them serializes the same objects, and validates the same input,
once with them and once with plain DRF (``plain_drf()``: each speed-up falls back to DRF's
own code); the results must be identical. And the field copies a serializer gets share no
mutable state with the per-class templates.
"""

import json
from decimal import Decimal

import pytest
from django.test.utils import override_script_prefix
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from tests.conftest import make_user
from widgets import services
from widgets.api import serializers as api_serializers
from widgets.api.fast_fields import ReadPlanMixin, SharedFieldsMixin, plain_drf
from widgets.models import Category, ChangeLogEntry, Reservation, ReservationItem, StockMovement, Widget

pytestmark = pytest.mark.django_db

SERIALIZERS = sorted(
    (
        cls
        for cls in vars(api_serializers).values()
        if isinstance(cls, type)
        and issubclass(cls, (SharedFieldsMixin, ReadPlanMixin))
        and issubclass(cls, api_serializers.serializers.BaseSerializer)
    ),
    key=lambda cls: cls.__name__,
)


@pytest.fixture
def objects():
    """A bit of everything: with and without category, price, stock, history and user."""
    user = make_user("manager", username="alice")
    tools = services.create_category(user=user, name="Tools", description="Hand tools")
    services.create_category(name="Empty")
    hammer = services.create_widget(user=user, name="Hammer", category=tools, price=Decimal("9.99"), stock=5)
    services.create_widget(name="Nail ünïcode ✓", description="line one\nline two", stock=0, reorder_level=3)
    bare = services.create_widget(name="Bare", is_active=False)
    services.adjust_stock(widget_id=hammer.pk, delta=-2, reason="sold", note="counter", user=user)
    services.adjust_stock(widget_id=bare.pk, delta=4, reason="received")
    services.update_widget(widget=hammer, changes={"name": "Claw hammer"}, user=user)
    held = services.create_reservation(reference="order-1", items=[{"widget": hammer.pk, "quantity": 1}], user=user)
    services.create_reservation(reference="order-2", items=[{"widget": bare.pk, "quantity": 2}])
    services.commit_reservation(reservation_id=held.pk, user=user)
    return {
        Category: list(Category.objects.order_by("id")),
        Widget: list(Widget.objects.with_availability().order_by("id")),
        Reservation: list(Reservation.objects.select_related("created_by").prefetch_related("items").order_by("id")),
        ReservationItem: list(ReservationItem.objects.order_by("id")),
        StockMovement: list(StockMovement.objects.select_related("created_by").order_by("id")),
        ChangeLogEntry: list(ChangeLogEntry.objects.select_related("user").order_by("id")),
    }


ADJUSTMENTS = [
    {"delta": 3, "reason": "received", "note": "pallet"},
    {"delta": -1, "reason": "sold"},
    {"delta": 0, "reason": "sold"},
    {"delta": "3", "reason": "received"},
    {"delta": 1, "reason": "initial", "note": "x\x00y"},
    {},
]
# Input each serializer validates, besides what it renders.
INPUTS = {
    "AdjustmentSerializer": ADJUSTMENTS,
    "BatchItemSerializer": [
        *({**item, "widget": 1} for item in ADJUSTMENTS),
        {"widget": 0, "delta": 1, "reason": "sold"},
    ],
    "AdjustmentBatchSerializer": [
        {"items": [{"widget": 1, "delta": 1, "reason": "received"}, {"widget": 2, "delta": -1, "reason": "sold"}]},
        {"items": []},
        {"items": [{"widget": 1, "delta": 1, "reason": "received"}, {"widget": 2, "delta": 0, "reason": "sold"}]},
        {"items": "nope"},
    ],
    "CategorySerializer": [{"name": "Fasteners"}, {"name": "!!!"}, {"name": 7}, {}],
    "WidgetSerializer": [
        {"name": "Bolt", "sku": "bolt-1", "price": "0.10", "stock": 7, "reorder_level": 2},
        {"name": "Bolt", "price": 0.1},
        {"name": " ", "sku": "ıx", "is_active": "yes", "stock": -1},
        {"name": "Bolt", "category": 999999},
    ],
    "WidgetUpdateSerializer": [{"name": "Renamed", "stock": 1}, {"name": ""}],
    "ReservationCreateSerializer": [
        {"reference": "order-9", "ttl_seconds": 600, "items": [{"widget": 1, "quantity": 2}]},
        {"reference": "order-9", "items": [{"widget": 1, "quantity": 1}, {"widget": 1, "quantity": 1}]},
        {"reference": " ", "ttl_seconds": 5, "items": []},
        {"items": [{"widget": "1", "quantity": 0}]},
    ],
    "ReservationExtendSerializer": [{"ttl_seconds": 900}, {"ttl_seconds": 10}, {}],
    "ReservationItemInputSerializer": [{"widget": 1, "quantity": 3}, {"widget": 0, "quantity": -1}],
}


def request():
    return Request(APIRequestFactory().get("/api/widgets/", HTTP_HOST="testserver"))


def rendered(cls, objects):
    """Everything ``cls`` produces from the same objects and input, as JSON text."""
    context = {"request": request()}
    out = {}
    model = getattr(getattr(cls, "Meta", None), "model", None)
    if model is not None:
        instances = objects[model]
        assert instances, f"no {model.__name__} to render"
        out["many"] = cls(instances, many=True, context=context).data
        out["one"] = [cls(instance, context=context).data for instance in instances]
    if cls is api_serializers.BatchResultSerializer:
        out["one"] = cls({"movements": objects[StockMovement]}, context=context).data
    for data in INPUTS.get(cls.__name__, []):
        serializer = cls(data=data, context=context)
        try:
            valid = serializer.is_valid()
            result = [valid, serializer.validated_data if valid else serializer.errors]
        except Exception as exc:  # noqa: BLE001 (the same exception both ways is the same answer)
            result = [type(exc).__name__, str(exc)]
        out.setdefault("input", []).append(result)
    assert out, f"{cls.__name__}: nothing to compare; add its input to INPUTS"
    return json.dumps(out, default=repr)  # keys in their order: the order is output too


def test_every_serializer_using_the_speed_ups_is_compared():
    names = {cls.__name__ for cls in SERIALIZERS}

    assert {"WidgetSerializer", "CategorySerializer", "StockMovementSerializer", "ChangeLogEntrySerializer"} <= names


@pytest.mark.parametrize("cls", SERIALIZERS, ids=lambda cls: cls.__name__)
def test_output_is_the_same_as_plain_drf(cls, objects):
    fast = rendered(cls, objects)
    fast_again = rendered(cls, objects)  # from the per-class templates, now built
    with plain_drf():
        plain = rendered(cls, objects)

    assert fast == plain
    assert fast_again == plain


# --- Copies share no mutable state --------------------------------------------------------


def no_hammers(value):
    if "hammer" in value.lower():
        raise api_serializers.serializers.ValidationError("No hammers here.")


class ShopWidgetSerializer(api_serializers.WidgetSerializer):
    """A serializer adding a validator and a message at run time, as DRF code often does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].validators.append(no_hammers)
        self.fields["name"].error_messages["blank"] += " (shop rule)"


def test_a_validator_appended_at_run_time_does_not_pile_up_across_requests():
    for _ in range(3):  # three requests, each with its own serializer
        hammer = ShopWidgetSerializer(data={"name": "Hammer"}, context={"request": request()})
        blank = ShopWidgetSerializer(data={"name": ""}, context={"request": request()})

        assert not hammer.is_valid() and not blank.is_valid()
        assert hammer.errors["name"] == ["No hammers here."]
        assert blank.errors["name"] == ["This field may not be blank. (shop rule)"]


def test_a_field_changed_at_run_time_leaves_other_serializers_alone():
    ShopWidgetSerializer(context={"request": request()})

    plain = api_serializers.WidgetSerializer(data={"name": "Hammer"}, context={"request": request()})

    assert plain.is_valid(), plain.errors
    assert no_hammers not in plain.fields["name"].validators


DECIMALS = [
    "9.99",
    "0.00",
    "-0.00",
    "0.10",
    "1234567890.12",
    "-3.50",
    "12345678901.23",  # fits, or one digit too many
    "1.5",
    "2",
    "1.555",
    "1.545",
    "-0.005",
    "1E+3",
    "1.00E-7",
    "123456789012",
    "NaN",
    "Infinity",
    "0.000",
]


@pytest.mark.parametrize(
    "options",
    [
        {"max_digits": 12, "decimal_places": 2},
        {"max_digits": None, "decimal_places": 2},
        {"max_digits": 12, "decimal_places": 2, "coerce_to_string": False},
        {"max_digits": 12, "decimal_places": 2, "normalize_output": True},
        {"max_digits": 5, "decimal_places": 0},
        {"max_digits": 6, "decimal_places": 3},
    ],
    ids=repr,
)
def test_a_decimal_is_written_as_plain_drf_writes_it(options):
    def written(value):
        field = api_serializers.PriceField(**options)
        try:
            return repr(field.to_representation(value))
        except Exception as exc:  # noqa: BLE001 (the same exception both ways is the same answer)
            return type(exc).__name__

    values = [Decimal(text) for text in DECIMALS] + [None, 7, 1.25]
    fast = [written(value) for value in values]
    with plain_drf():
        assert [written(value) for value in values] == fast
    # A price from the database, as the API writes it.
    assert fast[0] == repr("9.99") or options["decimal_places"] != 2 or len(options) > 2


# --- The object's url ---------------------------------------------------------------------


def test_the_url_follows_each_requests_host_and_script_prefix(viewer, settings):
    """The path behind ``url`` is worked out once per process; the host, the scheme and the
    prefix the app is mounted under (SCRIPT_NAME) are each request's own."""
    settings.ALLOWED_HOSTS = ["testserver", "shop.example"]
    widget = services.create_widget(name="Hammer")
    path = f"/api/widgets/{widget.pk}/"

    answers = [viewer.get(path).json()["url"]]
    # What Django's WSGI handler sets from SCRIPT_NAME (the test client does not).
    with override_script_prefix("/inventory/"):
        answers.append(viewer.get(path).json()["url"])
    answers.append(viewer.get(path, HTTP_HOST="shop.example", secure=True).json()["url"])
    with override_script_prefix("/inventory/"):
        answers.append(viewer.get("/api/widgets/").json()["results"][0]["url"])
    answers.append(viewer.get(path).json()["url"])

    assert answers == [
        f"http://testserver{path}",
        f"http://testserver/inventory{path}",
        f"https://shop.example{path}",
        f"http://testserver/inventory{path}",
        f"http://testserver{path}",
    ]


# --- Fields made when first used --------------------------------------------------------


def test_fields_asked_for_by_name_first_are_still_listed_in_their_order_and_bound():
    serializer = api_serializers.WidgetSerializer(context={"request": request()})

    price, url = serializer.fields["price"], serializer.fields["url"]
    listed = list(serializer.fields.items())

    assert [name for name, _ in listed] == api_serializers.WidgetSerializer.Meta.fields
    assert all(field.parent is serializer and field.field_name == name for name, field in listed)
    assert serializer.fields["price"] is price and dict(listed)["url"] is url  # each made once
    assert "nope" not in serializer.fields and len(serializer.fields) == len(listed)


class TerseWidgetSerializer(api_serializers.WidgetSerializer):
    """Drops a field at run time, as serializers with a ``fields=`` argument do."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.pop("description")
        self.fields["name"].label = "Title"


class NoPriceWidgetSerializer(api_serializers.WidgetSerializer):
    """Changes get_fields() itself."""

    def get_fields(self):
        fields = super().get_fields()
        del fields["price"]
        return fields


@pytest.mark.parametrize("cls", [TerseWidgetSerializer, NoPriceWidgetSerializer], ids=lambda cls: cls.__name__)
def test_a_serializer_changing_its_fields_renders_as_plain_drf(cls, objects):
    fast = rendered(cls, objects)
    with plain_drf():
        plain = rendered(cls, objects)

    assert fast == plain
    removed = "description" if cls is TerseWidgetSerializer else "price"
    assert removed not in json.loads(fast)["one"][0]
