"""CSV export: GET /api/widgets/?format=csv and the admin action."""

import csv
import io

import pytest
from django.test import Client

from tests.conftest import make_user
from widgets.csv_io import COLUMNS

pytestmark = pytest.mark.django_db


def read_csv(response):
    assert response.streaming, "the export must stream, not build the file in memory"
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text, newline="")))


class TestApiCsvExport:
    def test_format_csv_streams_the_import_columns(self, viewer, create_widget, create_category):
        category = create_category(name="Hand Tools")
        create_widget(
            sku="SPAN-1",
            name='Spanner, "big"',
            description="line 1\nline 2",
            category=category["id"],
            price="12.50",
            reorder_level=3,
            stock=7,
        )

        response = viewer.get("/api/widgets/?format=csv")

        assert response.status_code == 200
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert 'filename="widgets.csv"' in response["Content-Disposition"]
        assert read_csv(response) == [
            COLUMNS + ["reserved", "available"],
            ["SPAN-1", 'Spanner, "big"', "line 1\nline 2", "hand-tools", "12.50", "3", "true", "7", "1", "0", "7"],
        ]

    def test_accept_text_csv_header_also_gives_csv(self, viewer, create_widget):
        create_widget(sku="A-1")

        response = viewer.get("/api/widgets/", HTTP_ACCEPT="text/csv")

        assert response.status_code == 200
        assert [row[0] for row in read_csv(response)] == ["sku", "A-1"]

    def test_csv_honours_the_json_filters_and_ordering_without_pagination(self, viewer, create_widget):
        for n in range(60):
            create_widget(sku=f"W-{n:02d}", stock=n, reorder_level=10)
        query = "low_stock=true&ordering=-stock&limit=5"

        json_skus = [w["sku"] for w in viewer.get(f"/api/widgets/?{query}").json()["results"]]
        csv_skus = [row[0] for row in read_csv(viewer.get(f"/api/widgets/?{query}&format=csv"))[1:]]

        assert json_skus == ["W-10", "W-09", "W-08", "W-07", "W-06"]
        assert csv_skus == [f"W-{n:02d}" for n in range(10, -1, -1)]  # every match, not one page

    def test_query_count_does_not_grow_with_rows(self, viewer, create_widget, django_assert_max_num_queries):
        for n in range(40):
            create_widget(stock=n)

        with django_assert_max_num_queries(5):  # token, its last use, permissions (2), then one export query
            response = viewer.get("/api/widgets/?format=csv")
            rows = read_csv(response)

        assert len(rows) == 41

    def test_bad_filter_with_format_csv_is_a_json_400(self, viewer):
        response = viewer.get("/api/widgets/?format=csv&is_active=maybe")

        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert "is_active" in response.json()

    @pytest.mark.parametrize("param, value", [("offset", "true"), ("limit", "0"), ("start", "x")])
    def test_bad_paging_parameter_with_format_csv_is_a_json_400(self, viewer, param, value):
        # The file is not paged, but a wrong parameter is refused rather than ignored.
        response = viewer.get("/api/widgets/", {"format": "csv", param: value})

        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert param in response.json()

    def test_anonymous_csv_request_is_a_json_401(self, anon):
        response = anon.get("/api/widgets/?format=csv")

        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"

    def test_without_view_permission_is_403(self, no_role):
        assert no_role.get("/api/widgets/?format=csv").status_code == 403

    def test_csv_is_offered_by_the_list_only(self, viewer, create_widget):
        widget = create_widget()

        response = viewer.get(f"/api/widgets/{widget['id']}/?format=csv")

        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"

    def test_schema_documents_the_csv_response(self, anon):
        schema = anon.get("/api/schema/?format=json").json()

        operation = schema["paths"]["/api/widgets/"]["get"]
        assert "text/csv" in operation["responses"]["200"]["content"]
        assert any(p["name"] == "format" and "csv" in p["schema"]["enum"] for p in operation["parameters"])


class TestAdminCsvExport:
    def test_action_exports_the_selected_widgets(self, create_widget):
        first, _, third = create_widget(sku="A-1"), create_widget(sku="B-2"), create_widget(sku="C-3")
        client = Client()
        client.force_login(make_user("viewer", is_staff=True))

        response = client.post(
            "/admin/widgets/widget/",
            {"action": "export_csv", "_selected_action": [first["id"], third["id"]]},
        )

        assert response.status_code == 200
        assert [row[0] for row in read_csv(response)] == ["sku", "A-1", "C-3"]

    def test_action_with_select_all_exports_the_filtered_list(self, create_widget):
        create_widget(sku="LOW-1", stock=0, reorder_level=5)
        create_widget(sku="OK-1", stock=9, reorder_level=5)
        create_widget(sku="LOW-2", stock=5, reorder_level=5)
        client = Client()
        client.force_login(make_user("viewer", is_staff=True))

        response = client.post(
            "/admin/widgets/widget/?low_stock=yes",
            {"action": "export_csv", "select_across": "1", "_selected_action": ["0"]},
        )

        assert [row[0] for row in read_csv(response)] == ["sku", "LOW-1", "LOW-2"]


class TestSpreadsheetFormulas:
    """Text a spreadsheet would run as a formula (CSV injection) goes out as text."""

    @pytest.mark.parametrize("text", ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)"])
    def test_text_starting_like_a_formula_is_exported_behind_an_apostrophe(self, viewer, create_widget, text):
        create_widget(sku="F-1", name=text, description=text)

        row = read_csv(viewer.get("/api/widgets/?format=csv"))[1]

        assert row[1:3] == ["'" + text, "'" + text]

    @pytest.mark.parametrize("description", ["\t=1+1", "\r\n=1+1"])
    def test_a_description_starting_with_a_tab_or_carriage_return_is_protected(
        self, viewer, create_widget, description
    ):
        create_widget(sku="F-1", description=description)

        row = read_csv(viewer.get("/api/widgets/?format=csv"))[1]

        assert row[2] == "'" + description

    def test_ordinary_text_and_numbers_are_exported_as_they_are(self, viewer, create_widget):
        create_widget(sku="-A-1", name="Drill 'pro'", description="'quoted' and 3-way", price="1.50", stock=3)

        row = read_csv(viewer.get("/api/widgets/?format=csv"))[1]

        assert row[:3] == ["-A-1", "Drill 'pro'", "'quoted' and 3-way"]
        assert row[4:] == ["1.50", "0", "true", "3", "1", "0", "3"]

    def test_admin_export_protects_formulas_too(self, create_widget):
        widget = create_widget(sku="F-1", name="=1+1")
        client = Client()
        client.force_login(make_user("viewer", is_staff=True))

        response = client.post("/admin/widgets/widget/", {"action": "export_csv", "_selected_action": [widget["id"]]})

        assert read_csv(response)[1][1] == "'=1+1"
