"""List filters, ordering and pagination: one test per filter, bad values are 400s."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.fixture
def catalogue(create_widget, create_category):
    """Three widgets whose fields all sort differently from creation order."""
    tools = create_category(name="Hand Tools")
    parts = create_category(name="Parts")
    bravo = create_widget(
        name="Bravo spanner",
        sku="B-1",
        stock=5,
        price="2.00",
        reorder_level=5,
        description="chrome vanadium",
        category=tools["id"],
    )
    alpha = create_widget(
        name="Alpha bolt",
        sku="C-1",
        stock=1,
        price="1.00",
        reorder_level=0,
        description="zinc plated",
        category=parts["id"],
    )
    charlie = create_widget(
        name="Charlie hinge",
        sku="A-1",
        stock=9,
        price="3.00",
        reorder_level=10,
        is_active=False,
    )
    return {"tools": tools, "parts": parts, "bravo": bravo, "alpha": alpha, "charlie": charlie}


class TestWidgetFilters:
    @pytest.mark.parametrize(
        "term, expected",
        [("b-1", ["bravo"]), ("ALPHA", ["alpha"]), ("vanadium", ["bravo"]), ("IN", ["alpha", "charlie"])],
    )
    def test_search_matches_sku_name_and_description(self, viewer, catalogue, term, expected):
        assert ids(viewer.get("/api/widgets/", {"search": term})) == [catalogue[k]["id"] for k in expected]

    def test_category_by_id(self, viewer, catalogue):
        response = viewer.get("/api/widgets/", {"category": catalogue["parts"]["id"]})

        assert ids(response) == [catalogue["alpha"]["id"]]

    def test_category_by_slug(self, viewer, catalogue):
        assert catalogue["tools"]["slug"] == "hand-tools"

        assert ids(viewer.get("/api/widgets/", {"category": "hand-tools"})) == [catalogue["bravo"]["id"]]

    @pytest.mark.parametrize("value", ["nope", "999", "9" * 30])
    def test_unknown_category_is_a_400_naming_category(self, viewer, catalogue, value):
        response = viewer.get("/api/widgets/", {"category": value})

        assert response.status_code == 400, response.content
        assert list(response.json()) == ["category"]
        assert value[:20] in response.json()["category"][0]

    @pytest.mark.parametrize("value, expected", [("true", ["bravo", "alpha"]), ("false", ["charlie"])])
    def test_is_active(self, viewer, catalogue, value, expected):
        assert ids(viewer.get("/api/widgets/", {"is_active": value})) == [catalogue[k]["id"] for k in expected]

    @pytest.mark.parametrize("value, expected", [("true", ["bravo", "charlie"]), ("false", ["alpha"])])
    def test_low_stock_means_stock_at_or_below_reorder_level(self, viewer, catalogue, value, expected):
        # bravo: 5 <= 5 (boundary), charlie: 9 <= 10, alpha: 1 > 0
        assert ids(viewer.get("/api/widgets/", {"low_stock": value})) == [catalogue[k]["id"] for k in expected]

    def test_min_price_is_inclusive(self, viewer, catalogue):
        assert ids(viewer.get("/api/widgets/", {"min_price": "2.00"})) == [
            catalogue["bravo"]["id"],
            catalogue["charlie"]["id"],
        ]

    def test_max_price_is_inclusive(self, viewer, catalogue):
        assert ids(viewer.get("/api/widgets/", {"max_price": "2"})) == [
            catalogue["bravo"]["id"],
            catalogue["alpha"]["id"],
        ]

    def test_min_stock_is_inclusive(self, viewer, catalogue):
        assert ids(viewer.get("/api/widgets/", {"min_stock": 5})) == [
            catalogue["bravo"]["id"],
            catalogue["charlie"]["id"],
        ]

    def test_max_stock_is_inclusive(self, viewer, catalogue):
        assert ids(viewer.get("/api/widgets/", {"max_stock": 5})) == [
            catalogue["bravo"]["id"],
            catalogue["alpha"]["id"],
        ]

    def test_updated_after_is_inclusive(self, viewer, catalogue):
        at = catalogue["alpha"]["updated_at"]

        assert ids(viewer.get("/api/widgets/", {"updated_after": at})) == [
            catalogue["alpha"]["id"],
            catalogue["charlie"]["id"],
        ]

    def test_updated_before_is_inclusive(self, viewer, catalogue):
        at = catalogue["alpha"]["updated_at"]

        assert ids(viewer.get("/api/widgets/", {"updated_before": at})) == [
            catalogue["bravo"]["id"],
            catalogue["alpha"]["id"],
        ]

    def test_updated_after_accepts_an_offset_timestamp(self, viewer, catalogue):
        assert ids(viewer.get("/api/widgets/", {"updated_after": "2999-01-01T00:00:00+02:00"})) == []
        assert len(ids(viewer.get("/api/widgets/", {"updated_after": "2000-01-01T00:00:00+02:00"}))) == 3

    def test_filters_combine(self, viewer, catalogue):
        response = viewer.get("/api/widgets/", {"is_active": "true", "low_stock": "true", "min_price": "1.5"})

        assert ids(response) == [catalogue["bravo"]["id"]]

    @pytest.mark.parametrize(
        "param, value",
        [
            ("is_active", "maybe"),
            ("low_stock", "perhaps"),
            ("min_price", "abc"),
            ("max_price", "1,5"),
            ("min_stock", "1.5"),
            ("max_stock", "lots"),
            ("updated_after", "garbage"),
            ("updated_before", "2024-13-45T00:00:00Z"),
            ("ordering", "password"),
            ("ordering", "-password"),
            ("ordering", "name,reorder_level"),
        ],
    )
    def test_invalid_value_is_400_naming_the_parameter(self, viewer, catalogue, param, value):
        response = viewer.get("/api/widgets/", {param: value})

        assert response.status_code == 400, response.content
        assert param in response.json()


ORDER_KEYS = {
    "name": lambda w: w["name"],
    "sku": lambda w: w["sku"],
    "stock": lambda w: w["stock"],
    "price": lambda w: float(w["price"]),
    "created_at": lambda w: w["created_at"],
    "updated_at": lambda w: w["updated_at"],
}


class TestWidgetOrdering:
    @pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
    @pytest.mark.parametrize("field", list(ORDER_KEYS))
    def test_ordering_by_each_allowed_field(self, viewer, manager, catalogue, field, descending):
        # Touch the first widget so that updated_at order differs from creation order.
        manager.patch(f"/api/widgets/{catalogue['bravo']['id']}/", {"description": "touched"}, format="json")
        widgets = viewer.get("/api/widgets/").json()["results"]
        expected = [w["id"] for w in sorted(widgets, key=ORDER_KEYS[field], reverse=descending)]

        response = viewer.get("/api/widgets/", {"ordering": f"-{field}" if descending else field})

        assert ids(response) == expected


class TestCategoryFilters:
    def test_search_matches_name_and_description(self, viewer, create_category):
        bolts = create_category(name="Bolts", description="threaded")
        create_category(name="Hinges", description="doors")

        assert ids(viewer.get("/api/categories/", {"search": "bolt"})) == [bolts["id"]]
        assert ids(viewer.get("/api/categories/", {"search": "THREAD"})) == [bolts["id"]]

    def test_ordering_by_name(self, viewer, create_category):
        b = create_category(name="B")
        a = create_category(name="A")

        assert ids(viewer.get("/api/categories/", {"ordering": "name"})) == [a["id"], b["id"]]
        assert ids(viewer.get("/api/categories/", {"ordering": "-name"})) == [b["id"], a["id"]]

    def test_invalid_ordering_is_400(self, viewer):
        response = viewer.get("/api/categories/", {"ordering": "slug; drop table"})

        assert response.status_code == 400
        assert "ordering" in response.json()


class TestPagination:
    def test_envelope_and_default_page_of_50(self, viewer):
        call_command("seed_widgets", count=60, days=0, verbosity=0)

        body = viewer.get("/api/widgets/").json()

        assert set(body) == {"count", "next", "previous", "results"}
        assert body["count"] == 60
        assert len(body["results"]) == 50
        assert body["previous"] is None
        assert parse_qs(urlsplit(body["next"]).query) == {"limit": ["50"], "offset": ["50"]}

    def test_page_size_setting_sets_the_default_page(self, viewer, create_widget, settings):
        for _ in range(4):
            create_widget()
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "PAGE_SIZE": 3}

        body = viewer.get("/api/widgets/").json()

        assert len(body["results"]) == 3
        assert parse_qs(urlsplit(body["next"]).query) == {"limit": ["3"], "offset": ["3"]}

    def test_next_and_previous_links(self, viewer, create_widget):
        created = [create_widget()["id"] for _ in range(5)]

        body = viewer.get("/api/widgets/", {"limit": 2, "offset": 2}).json()

        assert [row["id"] for row in body["results"]] == created[2:4]
        assert parse_qs(urlsplit(body["next"]).query) == {"limit": ["2"], "offset": ["4"]}
        assert parse_qs(urlsplit(body["previous"]).query) == {"limit": ["2"]}
        last = viewer.get(body["next"]).json()
        assert [row["id"] for row in last["results"]] == created[4:]
        assert last["next"] is None

    def test_next_link_keeps_the_filters(self, viewer, create_widget):
        for _ in range(3):
            create_widget(stock=1)

        body = viewer.get("/api/widgets/", {"limit": 1, "min_stock": 1, "ordering": "-stock"}).json()

        assert parse_qs(urlsplit(body["next"]).query) == {
            "limit": ["1"],
            "offset": ["1"],
            "min_stock": ["1"],
            "ordering": ["-stock"],
        }

    def test_limit_above_1000_is_clamped(self, viewer):
        call_command("seed_widgets", count=1005, days=0, verbosity=0)

        body = viewer.get("/api/widgets/", {"limit": 5000}).json()

        assert body["count"] == 1005
        assert len(body["results"]) == 1000
        assert parse_qs(urlsplit(body["next"]).query) == {"limit": ["1000"], "offset": ["1000"]}

    def test_offset_past_the_end_is_an_empty_page(self, viewer, create_widget):
        create_widget()

        body = viewer.get("/api/widgets/", {"offset": 10}).json()

        assert (body["count"], body["results"]) == (1, [])

    @pytest.mark.parametrize(
        "param, value",
        [
            ("limit", "abc"),
            ("limit", "-1"),
            ("limit", "0"),
            ("limit", "1.5"),
            ("limit", "9" * 40),
            ("offset", "abc"),
            ("offset", "-1"),
            ("offset", "9" * 40),
        ],
    )
    @pytest.mark.parametrize("url", ["/api/widgets/", "/api/categories/", "/api/movements/"])
    def test_invalid_limit_or_offset_is_400_naming_it(self, viewer, url, param, value):
        response = viewer.get(url, {param: value})

        assert response.status_code == 400, response.content
        assert param in response.json()
