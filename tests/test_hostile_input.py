"""Hostile input: every bad request gets a 4xx JSON answer naming the problem, and changes nothing.

One test per kind of attack or mistake: oversized and malformed bodies, wrong JSON types
for every writable field, numbers beyond 64 bits, bad paging and ordering, huge query
strings and headers, markup and SQL in text, look-alike SKUs and awkward Unicode.
"""

import json
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from widgets.models import ApiToken, Category, StockMovement, Widget

from .conftest import make_user

pytestmark = pytest.mark.django_db

BIG = 2**64 + 1  # beyond any 64-bit column


def snapshot():
    return (
        list(Widget.objects.order_by("pk").values()),
        list(Category.objects.order_by("pk").values()),
        list(StockMovement.objects.order_by("pk").values()),
    )


@contextmanager
def nothing_changes():
    before = snapshot()
    yield
    assert snapshot() == before, "a refused request changed the data"


def assert_refused(response, status=400, *, naming=None):
    """A 4xx JSON answer; ``naming`` must appear among the keys or in the detail of the body."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    if naming is not None:
        assert naming in body or naming in json.dumps(body), body
    return body


@pytest.fixture
def widget(create_widget, create_category):
    return create_widget(name="Spanner", sku="SPN-1", stock=10, category=create_category(name="Tools")["id"])


@pytest.fixture
def category(widget):
    return Category.objects.get(name="Tools")


class TestBodies:
    def test_json_body_over_the_size_limit_is_413(self, manager, settings, widget):
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": "W", "description": "x" * 20_000}, format="json")
        assert_refused(response, 413, naming="request_too_large")

    def test_form_body_over_the_size_limit_is_413(self, manager, settings):
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": "W", "description": "x" * 20_000}, format="multipart")
        assert_refused(response, 413, naming="request_too_large")

    def test_default_size_limit_is_one_mebibyte(self, manager):
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": "W", "description": "x" * (1024 * 1024)}, format="json")
        assert_refused(response, 413, naming="1048576 bytes")

    def test_deeply_nested_json_is_400(self, manager):
        depth = 100_000
        body = '{"name": ' + "[" * depth + "]" * depth + "}"
        with nothing_changes():
            response = manager.generic("POST", "/api/widgets/", body, content_type="application/json")
        assert_refused(response, naming="nested too deeply")

    def test_moderately_nested_value_is_400_naming_the_field(self, manager):
        value = {"a": [[[[{"b": [1]}]]]]}
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": value}, format="json")
        assert_refused(response, naming="name")

    @pytest.mark.parametrize(
        "raw",
        [b'{"name": "\xff\xfe"}', b'{"name": "caf\xc3"}', b"\xef\xbb\xbf\xff{}"],
        ids=["invalid-bytes", "truncated-sequence", "bom-then-garbage"],
    )
    def test_invalid_utf8_body_is_400(self, manager, raw):
        with nothing_changes():
            response = manager.generic("POST", "/api/widgets/", raw, content_type="application/json")
        assert_refused(response, naming="parse_error")

    @pytest.mark.parametrize("raw", [b"NaN", b'{"name": "W", "price": Infinity}', b"{", b'{"name": "W",}', b""])
    def test_malformed_json_is_400(self, manager, raw):
        with nothing_changes():
            response = manager.generic("POST", "/api/widgets/", raw, content_type="application/json")
        assert response.status_code == 400, response.content
        assert response["Content-Type"].startswith("application/json")

    @pytest.mark.parametrize("body", [[], ["name", "W"], "W", 42, None, True])
    def test_body_that_is_not_an_object_is_400(self, manager, body):
        with nothing_changes():
            response = manager.generic("POST", "/api/widgets/", json.dumps(body), content_type="application/json")
        assert_refused(response)

    def test_unsupported_media_type_is_415_naming_it(self, manager):
        with nothing_changes():
            response = manager.generic("POST", "/api/widgets/", "name=W", content_type="text/plain")
        assert_refused(response, 415, naming="text/plain")


# Wrong JSON types for every writable field of every writable endpoint. One test per field,
# trying every wrong value (a test per value would multiply the suite's run time).
NOT_TEXT = [123, 1.5, True, [], {}, ["W"], {"name": "W"}, None]
NOT_INTEGER = ["many", "1", 1.5, True, [], {}, [1], {"value": 1}, None]
NOT_BOOLEAN = ["true", "yes", 1, 0, 1.0, [], {}, [True], None]
NOT_PRICE = [1.5, True, "1e2", " 5", "5 ", "-1", "1.234", "", "NaN", [], {}, ["1.00"], None]
NOT_CATEGORY = ["Tools", "1", True, 1.5, [], {}, [1]]
WIDGET_FIELDS = {
    "name": NOT_TEXT,
    "description": NOT_TEXT,
    "sku": NOT_TEXT,
    "price": NOT_PRICE,
    "reorder_level": NOT_INTEGER,
    "is_active": NOT_BOOLEAN,
    "category": NOT_CATEGORY,
}
CATEGORY_FIELDS = {"name": NOT_TEXT, "description": NOT_TEXT}
ADJUST_FIELDS = {
    "delta": NOT_INTEGER + [0],
    "reason": [1, True, [], {}, None, "initial", "SOLD", "stolen"],
    "note": NOT_TEXT,
}


def assert_each_refused(send, field, values):
    """``send(value)`` must be refused with a 400 naming ``field`` for every value; changes nothing."""
    wrong = []
    with nothing_changes():
        for value in values:
            response = send(value)
            if response.status_code != 400 or field not in response.json():
                wrong.append((value, response.status_code, response.content[:200]))
    assert not wrong, wrong


class TestWrongTypes:
    @pytest.mark.parametrize("field", [*WIDGET_FIELDS, "stock"])
    def test_widget_create_refuses_every_wrong_type(self, manager, widget, field):
        values = WIDGET_FIELDS.get(field, NOT_INTEGER)
        send = lambda value: manager.post("/api/widgets/", {"name": "New", field: value}, format="json")  # noqa: E731
        assert_each_refused(send, field, values)

    @pytest.mark.parametrize("field", WIDGET_FIELDS)
    @pytest.mark.parametrize("method", ["patch", "put"])
    def test_widget_update_refuses_every_wrong_type(self, manager, widget, method, field):
        url = f"/api/widgets/{widget['id']}/"
        send = lambda value: getattr(manager, method)(url, {"name": "Renamed", field: value}, format="json")  # noqa: E731
        assert_each_refused(send, field, WIDGET_FIELDS[field])

    @pytest.mark.parametrize("field", CATEGORY_FIELDS)
    @pytest.mark.parametrize("method", ["post", "patch", "put"])
    def test_category_write_refuses_every_wrong_type(self, manager, category, method, field):
        url = "/api/categories/" if method == "post" else f"/api/categories/{category.pk}/"
        send = lambda value: getattr(manager, method)(url, {"name": "Other", field: value}, format="json")  # noqa: E731
        assert_each_refused(send, field, CATEGORY_FIELDS[field])

    @pytest.mark.parametrize("field", ADJUST_FIELDS)
    def test_adjust_refuses_every_wrong_type(self, clerk, widget, field):
        url = f"/api/widgets/{widget['id']}/adjust/"
        send = lambda value: clerk.post(url, {"delta": 1, "reason": "received", field: value}, format="json")  # noqa: E731
        assert_each_refused(send, field, ADJUST_FIELDS[field])

    def test_browsable_api_form_still_coerces_text(self, manager):
        # HTML forms send only text: "5" and "true" must keep working there.
        response = manager.post(
            "/api/widgets/",
            {"name": "Form", "reorder_level": "5", "is_active": "true", "price": "2.50"},
            format="multipart",
        )
        assert response.status_code == 201, response.content
        assert (response.json()["reorder_level"], response.json()["is_active"]) == (5, True)


class TestHugeNumbers:
    @pytest.mark.parametrize(
        "path",
        [
            f"/api/widgets/{BIG}/",
            f"/api/categories/{BIG}/",
            f"/api/movements/{BIG}/",
            f"/api/widgets/{BIG}/movements/",
            f"/api/widgets/{'9' * 5000}/",
        ],
    )
    def test_id_beyond_64_bits_in_url_is_404(self, manager, widget, path):
        assert_refused(manager.get(path), 404, naming="not_found")

    @pytest.mark.parametrize("method", ["patch", "put", "delete"])
    def test_write_to_id_beyond_64_bits_is_404(self, manager, widget, method):
        with nothing_changes():
            response = getattr(manager, method)(f"/api/widgets/{BIG}/", {"name": "X"}, format="json")
        assert_refused(response, 404)

    def test_adjust_of_id_beyond_64_bits_is_404(self, clerk, widget):
        with nothing_changes():
            response = clerk.post(f"/api/widgets/{BIG}/adjust/", {"delta": 1, "reason": "received"}, format="json")
        assert_refused(response, 404)

    @pytest.mark.parametrize(
        "query, param",
        [
            (f"/api/movements/?widget={BIG}", "widget"),
            (f"/api/widgets/?min_stock={BIG}", "min_stock"),
            (f"/api/widgets/?max_stock=-{BIG}", "max_stock"),
            (f"/api/widgets/?limit={BIG}", "limit"),
            (f"/api/widgets/?offset={BIG}", "offset"),
            (f"/api/widgets/?offset={'9' * 5000}", "offset"),
            (f"/api/widgets/?category={BIG}", "category"),  # no such category
            (f"/api/widgets/?category={'9' * 200}", "category"),
        ],
    )
    def test_integer_beyond_64_bits_in_query_is_400_naming_it(self, viewer, widget, query, param):
        assert_refused(viewer.get(query), naming=param)

    @pytest.mark.parametrize(
        "query",
        [
            "/api/widgets/?min_price=1e999999",
            "/api/widgets/?max_price=-1e999999",
            "/api/widgets/?min_price=1e-999999&max_price=0",
        ],
    )
    def test_out_of_range_filter_values_match_nothing(self, viewer, widget, query):
        # Valid numbers no widget can have: an empty page, not a database error.
        response = viewer.get(query)
        assert response.status_code == 200, response.content
        assert response.json()["count"] == 0

    @pytest.mark.parametrize(
        "field, literal, status",
        [
            ("stock", str(BIG), 400),
            ("reorder_level", str(BIG), 400),
            ("price", str(BIG), 400),
            ("price", f'"{BIG}"', 400),
            ("category", str(BIG), 400),
            ("reorder_level", "9" * 5000, 400),
            ("stock", "1e400", 400),
        ],
    )
    def test_integer_beyond_64_bits_in_body_is_refused(self, manager, widget, field, literal, status):
        body = f'{{"name": "W", "{field}": {literal}}}'
        with nothing_changes():
            response = manager.generic("POST", "/api/widgets/", body, content_type="application/json")
        # A number too long for Python's int() fails the JSON parse itself (parse_error).
        assert_refused(response, status, naming=field if len(literal) < 4000 else "parse_error")

    @pytest.mark.parametrize("delta", [BIG, -BIG, 2**31, -(2**31)])
    def test_delta_beyond_the_stock_range_is_400(self, clerk, widget, delta):
        with nothing_changes():
            response = clerk.post(
                f"/api/widgets/{widget['id']}/adjust/", {"delta": delta, "reason": "received"}, format="json"
            )
        assert_refused(response, naming="delta")


class TestPagingAndOrdering:
    @pytest.mark.parametrize(
        "query, param",
        [
            ("limit=0", "limit"),
            ("limit=-1", "limit"),
            ("limit=-0", "limit"),
            ("limit=1.5", "limit"),
            ("limit=abc", "limit"),
            ("limit=%EF%BC%91", "limit"),
            ("offset=-1", "offset"),
            ("offset=1e3", "offset"),
            ("offset=+5", "offset"),
        ],
    )
    def test_bad_limit_or_offset_is_400_naming_it(self, viewer, widget, query, param):
        assert_refused(viewer.get(f"/api/widgets/?{query}"), naming=param)

    def test_limit_above_the_maximum_is_clamped(self, viewer, widget):
        response = viewer.get("/api/widgets/?limit=999999")
        assert response.status_code == 200
        assert response.json()["count"] == 1

    @pytest.mark.parametrize(
        "path",
        [
            "/api/widgets/abc/",
            "/api/widgets/1.5/",
            "/api/widgets/?format=xml",
            "/api/widgets/-1/",
            "/api/widgets/%00/",
            "/api/widgets/%ff/",
            "/api/categories/tools/",
            "/api/movements/1e3/",
        ],
    )
    def test_non_numeric_id_is_404_json(self, viewer, widget, path):
        assert_refused(viewer.get(path), 404, naming="not_found")

    @pytest.mark.parametrize(
        "ordering",
        ["colour", "description", "category__name", "-stock_after", "stock;DROP TABLE x", "%00", "x" * 5_000],
    )
    def test_unknown_ordering_field_is_400(self, viewer, widget, ordering):
        assert_refused(viewer.get("/api/widgets/", {"ordering": ordering}), naming="ordering")

    @pytest.mark.parametrize(
        "query, param",
        [
            ("is_active=maybe", "is_active"),
            ("updated_after=yesterday", "updated_after"),
            ("updated_after=0001-01-01T00:00:00%2B05:00", "updated_after"),
            ("min_price=abc", "min_price"),
            ("search=%00", "search"),
            ("category=%00", "category"),
            (f"category={'9' * 5000}", "category"),
        ],
    )
    def test_bad_filter_value_is_400_naming_it(self, viewer, widget, query, param):
        assert_refused(viewer.get(f"/api/widgets/?{query}"), naming=param)

    @pytest.mark.parametrize(
        "url, param, matches",
        [
            ("/api/widgets/", "updated_after", 1),
            ("/api/movements/", "created_after", 1),
            ("/api/changes/", "since", 2),  # the category and the widget
        ],
    )
    def test_datetime_with_an_offset_postgres_refuses_is_converted(self, viewer, widget, url, param, matches):
        # Python accepts -23:17; PostgreSQL does not. Every datetime filter compares in UTC instead.
        response = viewer.get(url, {param: "2000-01-01T00:00:00-23:17"})
        assert response.status_code == 200, response.content
        assert response.json()["count"] == matches


class TestLongInput:
    """Within the URL and header limits (8,000 bytes; beyond them a 414 or 431 before any
    view, tests/test_oversized_requests.py), each value is still checked on its own."""

    def test_very_long_search_is_400_naming_it(self, viewer, widget):
        assert_refused(viewer.get("/api/widgets/", {"search": "x" * 5_000}), naming="search")

    def test_long_search_within_the_limit_is_answered(self, viewer, widget):
        response = viewer.get("/api/widgets/", {"search": "Spanner" + "x" * 193})
        assert response.status_code == 200
        assert response.json()["count"] == 0

    def test_unknown_query_parameters_are_ignored(self, viewer, widget):
        query = "&".join(f"p{i}=v" for i in range(500))
        response = viewer.get(f"/api/widgets/?{query}")
        assert response.status_code == 200
        assert response.json()["count"] == 1

    def test_too_many_query_parameters_is_400(self, viewer, widget):
        query = "&".join("p=v" for _ in range(1_500))
        assert_refused(viewer.get(f"/api/widgets/?{query}"), naming="Too many")

    @pytest.mark.parametrize("key", ["x" * 7_000, "wgi_" + "A" * 5_000, "wgi_abc\x00def", "wgi_ä", "wgi_abc def"])
    def test_long_or_odd_token_is_401(self, widget, key):
        client = Client(HTTP_AUTHORIZATION=f"Token {key}", HTTP_ACCEPT="application/json")
        assert_refused(client.get("/api/widgets/"), 401, naming="Invalid token")

    def test_long_unrelated_header_is_ignored(self, viewer, widget):
        response = viewer.get("/api/widgets/", HTTP_X_PADDING="y" * 7_000)
        assert response.status_code == 200

    @pytest.mark.parametrize("key", ["x" * 100_000, "wgi_" + "A" * 10_000])
    def test_a_token_longer_than_any_header_is_431(self, widget, key):
        client = Client(HTTP_AUTHORIZATION=f"Token {key}", HTTP_ACCEPT="application/json")
        assert_refused(client.get("/api/widgets/"), 431, naming="Authorization")

    def test_text_longer_than_the_field_is_400(self, manager, widget):
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": "n" * 101}, format="json")
        assert_refused(response, naming="name")


SQL = "Robert'); DROP TABLE widgets_widget;--"
HTML = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class TestMarkupAndSql:
    def test_sql_and_html_are_stored_and_returned_verbatim(self, manager):
        response = manager.post("/api/widgets/", {"name": SQL, "description": HTML}, format="json")
        assert response.status_code == 201, response.content
        widget = manager.get(f"/api/widgets/{response.json()['id']}/").json()
        assert (widget["name"], widget["description"]) == (SQL, HTML)
        assert manager.get("/api/widgets/", {"search": "DROP TABLE"}).json()["count"] == 1
        assert Widget.objects.get(pk=widget["id"]).description == HTML

    def test_html_is_escaped_in_the_browsable_api(self, manager):
        widget = manager.post("/api/widgets/", {"name": "Markup", "description": HTML}, format="json").json()
        page = manager.get(f"/api/widgets/{widget['id']}/", HTTP_ACCEPT="text/html")
        assert page.status_code == 200
        content = page.content.decode()
        assert "<script>alert" not in content
        assert "&lt;script&gt;" in content

    def test_html_is_escaped_in_the_admin(self, manager):
        widget = manager.post("/api/widgets/", {"name": HTML[:100], "description": HTML}, format="json").json()
        staff = make_user(is_staff=True, is_superuser=True)
        client = Client()
        client.force_login(staff)
        for url in ["/admin/widgets/widget/", f"/admin/widgets/widget/{widget['id']}/change/"]:
            page = client.get(url)
            assert page.status_code == 200, url
            assert "<script>alert" not in page.content.decode(), url
            assert "&lt;script&gt;" in page.content.decode(), url

    def test_sql_in_a_category_name_is_stored_verbatim(self, manager):
        response = manager.post("/api/categories/", {"name": SQL}, format="json")
        assert response.status_code == 201, response.content
        assert Category.objects.get(pk=response.json()["id"]).name == SQL


class TestLookAlikeSkus:
    @pytest.mark.parametrize("sku", ["spn-1", "Spn-1", "SPN-1"])
    def test_sku_differing_only_by_case_is_400(self, manager, widget, sku):
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": "Twin", "sku": sku}, format="json")
        assert_refused(response, 400, naming="sku")

    def test_sku_change_differing_only_by_case_is_400(self, manager, widget):
        other = manager.post("/api/widgets/", {"name": "Other"}, format="json").json()
        with nothing_changes():
            response = manager.patch(f"/api/widgets/{other['id']}/", {"sku": "spn-1"}, format="json")
        assert_refused(response, 400, naming="sku")

    # Characters whose upper case is ASCII ('ı' -> 'I', 'ſ' -> 'S', 'ﬀ' -> 'FF'), full-width
    # letters and look-alike dashes are not SKU characters, even though .upper() would
    # make some of them match an existing SKU.
    @pytest.mark.parametrize("sku", ["ſpn-1", "spn\u20111", "ＳＰＮ-1", "SPN-ı", "ﬀ-1", "SPN-1\n", " SPN-1", "SPN-1 "])
    def test_look_alike_sku_is_400(self, manager, widget, sku):
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": "Twin", "sku": sku}, format="json")
        assert_refused(response, naming="sku")

    def test_category_name_differing_only_by_case_is_400(self, manager, category):
        with nothing_changes():
            response = manager.post("/api/categories/", {"name": "TOOLS"}, format="json")
        assert_refused(response, 400, naming="name")


class TestUnicodeNames:
    @pytest.mark.parametrize(
        "name",
        [
            "Nut\x00",
            "\x00",
            "Tab\tbed",
            "Bell\x07",
            "Line\nbreak",
            "Del\x7f",
            "C1\x85",
            "   ",
            "\u3000",
            " \u2003 ",
            "\ufeffBOM",
        ],
    )
    def test_control_characters_and_blank_names_are_400(self, manager, name):
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": name}, format="json")
        assert_refused(response, naming="name")

    def test_nul_in_a_multi_line_field_is_400(self, manager):
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": "W", "description": "a\x00b"}, format="json")
        assert_refused(response, naming="description")

    @pytest.mark.parametrize("raw", ['"\\ud800"', '"a\\udfffb"', '"\\udbff\\udfff\\ud800"'])
    def test_lone_surrogates_are_400(self, manager, raw):
        body = f'{{"name": {raw}}}'
        with nothing_changes():
            response = manager.generic("POST", "/api/widgets/", body, content_type="application/json")
        assert_refused(response, naming="name")

    @pytest.mark.parametrize(
        "name",
        [
            "שלום עולם",
            "\u202eevil\u202c",
            "مرحبا 123",
            "🔧 Wrench 🛠️",
            "👩‍👩‍👧‍👦 family pack",
            "e\u0301te\u0301",
            "Z̴̢̛a̵l̷g̸o̶",
            "日本語のウィジェット",
            "\U0010fffd private",
            "a\u200bb",
            "🔧" * 100,
            "  spaced  ",
        ],
    )
    def test_unicode_names_are_stored_verbatim(self, manager, name):
        response = manager.post("/api/widgets/", {"name": name, "description": f"{name}\n{name}"}, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["name"] == name
        stored = Widget.objects.get(pk=response.json()["id"])
        assert (stored.name, stored.description) == (name, f"{name}\n{name}")

    def test_name_of_more_than_100_characters_is_400_however_encoded(self, manager):
        with nothing_changes():
            response = manager.post("/api/widgets/", {"name": "🔧" * 101}, format="json")
        assert_refused(response, naming="name")

    @pytest.mark.parametrize("name", ["🔧", "日本", "!!!", "é"])
    def test_category_name_without_a_latin_letter_or_digit_is_400(self, manager, name):
        # The slug (the category's URL-safe name) is made of these; an empty one is refused.
        with nothing_changes():
            response = manager.post("/api/categories/", {"name": name}, format="json")
        assert_refused(response, naming="name")

    def test_unicode_in_a_search_finds_it(self, manager, viewer):
        manager.post("/api/widgets/", {"name": "Café 🔧"}, format="json")
        assert viewer.get("/api/widgets/", {"search": "é 🔧"}).json()["count"] == 1


class TestRoles:
    def test_hostile_input_from_a_read_only_token_is_403_before_parsing(self, widget):
        user = make_user()
        user.groups.add(Group.objects.get(name="manager"))
        _, key = ApiToken.objects.issue(user=user, read_only=True)
        client = Client(HTTP_AUTHORIZATION=f"Token {key}")
        with nothing_changes():
            response = client.generic("POST", "/api/widgets/", b"\xff" * 100, content_type="application/json")
        assert_refused(response, 403)
