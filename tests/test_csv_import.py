"""CSV import: ``manage.py import_widgets`` and the admin import page."""

import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from tests.conftest import make_user
from widgets.csv_io import COLUMNS
from widgets.models import StockMovement, Widget

pytestmark = pytest.mark.django_db

# A file without the version column (written by hand, or by an older export).
HEADER = ",".join(column for column in COLUMNS if column != "version")


def write_csv(tmp_path, text, name="widgets.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_import(path, *args):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_widgets", path, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def snapshot():
    """Everything an import may change: every widget's fields and the whole ledger."""
    widgets = list(Widget.objects.order_by("id").values())
    movements = list(StockMovement.objects.order_by("id").values())
    return widgets, movements


class TestImportCommand:
    def test_new_skus_are_created_with_stock_as_initial_movement(self, tmp_path, create_category):
        create_category(name="Hand Tools")
        path = write_csv(
            tmp_path, f"{HEADER}\nspan-1,Spanner,Big one,Hand Tools,12.50,3,true,7\nNUT-1,Nut,,,0.10,0,false,0\n"
        )

        out, _ = run_import(path)

        spanner = Widget.objects.select_related("category").get(sku="SPAN-1")
        assert (spanner.name, spanner.description, spanner.category.slug, str(spanner.price)) == (
            "Spanner",
            "Big one",
            "hand-tools",
            "12.50",
        )
        assert (spanner.reorder_level, spanner.is_active, spanner.stock) == (3, True, 7)
        assert list(spanner.movements.values_list("reason", "delta", "stock_after")) == [("initial", 7, 7)]
        nut = Widget.objects.get(sku="NUT-1")
        assert (nut.category, nut.is_active, nut.stock, nut.movements.count()) == (None, False, 0, 0)
        assert "2 created, 0 updated, 0 stock corrections, 0 unchanged" in out

    def test_existing_sku_is_updated_and_stock_difference_is_a_correction(
        self, tmp_path, create_widget, create_category
    ):
        create_category(name="Fittings")
        widget = create_widget(sku="BOLT-1", name="Bolt", stock=10, price="1.00")
        path = write_csv(tmp_path, f"{HEADER}\nBOLT-1,Bolt M8,,fittings,1.25,5,true,4\n")

        out, _ = run_import(path, "--stock-corrections")

        bolt = Widget.objects.get(pk=widget["id"])
        assert (bolt.name, str(bolt.price), bolt.reorder_level, bolt.category.name, bolt.stock) == (
            "Bolt M8",
            "1.25",
            5,
            "Fittings",
            4,
        )
        newest = bolt.movements.order_by("-id").first()
        assert (newest.reason, newest.delta, newest.stock_after) == ("correction", -6, 4)
        assert "0 created, 1 updated, 1 stock corrections, 0 unchanged" in out

    def test_columns_left_out_keep_their_values(self, tmp_path, create_widget):
        widget = create_widget(sku="KEEP-1", name="Old", price="3.00", stock=5, reorder_level=2)
        path = write_csv(tmp_path, "sku,name\nKEEP-1,New name\n")

        run_import(path)

        kept = Widget.objects.get(pk=widget["id"])
        assert (kept.name, str(kept.price), kept.stock, kept.reorder_level) == ("New name", "3.00", 5, 2)
        assert kept.movements.count() == 1

    def test_errors_are_reported_by_row_and_column_and_nothing_is_written(self, tmp_path, create_widget):
        create_widget(sku="OK-1", name="Unchanged", stock=1)
        before = snapshot()
        path = write_csv(
            tmp_path,
            f"{HEADER}\n"
            "OK-1,Renamed,,,1.00,0,true,5\n"  # valid, but must not be applied
            "bad sku!,X,,,1.00,0,true,1\n"
            "NEW-1,,,,abc,-1,maybe,-5\n"
            "NEW-2,Y,,no-such-category,1.001,0,true,1\n"
            "OK-1,Again,,,1.00,0,true,1\n"
            "SHORT-1,too few cells\n",
        )

        with pytest.raises(CommandError, match="10 error"):
            _, err = run_import(path)

        assert snapshot() == before

    def test_error_lines_name_row_and_column(self, tmp_path):
        path = write_csv(tmp_path, f"{HEADER}\nNEW-1,,,,abc,1,true,1\nNEW-2,Y,,nope,1.00,0,true,1\n")
        err = io.StringIO()

        with pytest.raises(CommandError):
            call_command("import_widgets", path, stderr=err, verbosity=0)

        lines = err.getvalue().splitlines()
        assert "row 2, name: This field cannot be blank." in lines
        assert "row 2, price: Must be a number, e.g. 12.50." in lines
        assert "row 3, category: No category with the slug or name 'nope'." in lines

    @pytest.mark.parametrize(
        "text, message",
        [
            ("", "row 1, header: The file is empty"),
            ("sku,colour\n", "row 1, colour: Unknown column"),
            ("name,price\n", "row 1, sku: Required column is missing."),
            ("sku,name,sku\n", "row 1, sku: Column appears more than once."),
            (f"{HEADER}\n", "row 2, file: The file has a header but no rows."),
            (f"{HEADER}\nA-1,A,,,1,0,true,99999999999\n", "row 2, stock: Must be a whole number"),
            (
                f"{HEADER}\nA-1,{'x' * 101},,,1,0,true,1\n",
                "row 2, name: Ensure this value has at most 100 characters (it has 101).",
            ),
            (f"{HEADER}\nA-1,A,,,1,0,true,1\na-1,B,,,1,0,true,1\n", "row 3, sku: Duplicate of row 2."),
            (
                f"{HEADER}\nA-1,A,bad\x00byte,,1,0,true,1\n",
                "row 2, description: Must contain a visible character and no control characters",
            ),
        ],
    )
    def test_file_level_errors(self, tmp_path, text, message):
        err = io.StringIO()

        with pytest.raises(CommandError, match="nothing was imported"):
            call_command("import_widgets", write_csv(tmp_path, text), stderr=err, verbosity=0)

        assert message in err.getvalue()
        assert not Widget.objects.exists()

    def test_missing_file_is_a_clear_error(self, tmp_path):
        with pytest.raises(CommandError, match="Cannot read"):
            run_import(str(tmp_path / "nope.csv"))

    def test_non_utf8_file_is_a_clear_error(self, tmp_path):
        path = tmp_path / "latin1.csv"
        path.write_bytes(f"{HEADER}\nA-1,Caf\xe9,,,1,0,true,1\n".encode("latin-1"))

        with pytest.raises(CommandError, match="not UTF-8"):
            run_import(str(path))

    def test_dry_run_shows_changes_and_writes_nothing(self, tmp_path, create_widget):
        create_widget(sku="OLD-1", name="Old", stock=3)
        before = snapshot()
        path = write_csv(tmp_path, f"{HEADER}\nOLD-1,Renamed,,,0,0,true,8\nNEW-1,New,,,1,0,true,2\n")

        out, _ = run_import(path, "--dry-run", "--stock-corrections")

        assert snapshot() == before
        assert "create NEW-1" in out
        assert "update OLD-1: name" in out
        assert "stock  OLD-1: 3 -> 8" in out
        assert "Would import: 1 created, 1 updated, 1 stock corrections, 0 unchanged. Dry run" in out

    def test_export_then_import_changes_nothing(self, tmp_path, viewer, create_widget, create_category):
        category = create_category(name="Power Tools")
        create_widget(
            sku="A-1",
            name="Drill, cordless",
            description='Says "hi"\nover two lines',
            price="99.90",
            category=category["id"],
            stock=4,
            reorder_level=2,
        )
        create_widget(sku="B-2", name="  spaced  ", price="0", stock=0, is_active=False)
        exported = b"".join(viewer.get("/api/widgets/?format=csv").streaming_content)
        (tmp_path / "export.csv").write_bytes(exported)
        before = snapshot()

        out, _ = run_import(str(tmp_path / "export.csv"))

        assert snapshot() == before
        assert "0 created, 0 updated, 0 stock corrections, 2 unchanged" in out

    @pytest.mark.parametrize("text", ["=1+1", "'=1+1", "''=x", "'plain", "''", "-", "@home", "'\t"])
    def test_export_then_import_keeps_text_that_looks_like_a_formula(self, tmp_path, viewer, create_widget, text):
        create_widget(sku="F-1", name=text.strip(), description=text)
        create_widget(sku="F-2", name="x" + text.strip(), description="\t" + text)
        (tmp_path / "export.csv").write_bytes(b"".join(viewer.get("/api/widgets/?format=csv").streaming_content))
        before = snapshot()

        out, _ = run_import(str(tmp_path / "export.csv"))

        assert snapshot() == before
        assert "0 created, 0 updated, 0 stock corrections, 2 unchanged" in out

    def test_an_apostrophe_before_a_formula_is_taken_off_on_import(self, tmp_path):
        run_import(write_csv(tmp_path, "sku,name,description\nF-1,'=1+1,'@note\n"))

        assert Widget.objects.values_list("name", "description").get(sku="F-1") == ("=1+1", "@note")

    def test_query_count_grows_with_batches_not_rows(self, tmp_path, create_widget, django_assert_max_num_queries):
        for n in range(50):
            create_widget(sku=f"OLD-{n}", stock=1)
        rows = [f"OLD-{n},Renamed {n},,,1,0,true,{n + 2}" for n in range(50)]
        rows += [f"NEW-{n},New {n},,,1,0,true,{n}" for n in range(50)]
        path = write_csv(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n")

        # Category lookup, lock existing, insert widgets, insert movements, update, corrections.
        with django_assert_max_num_queries(12):
            run_import(path, "--stock-corrections")

        assert Widget.objects.filter(sku__startswith="NEW-").count() == 50
        assert StockMovement.objects.filter(reason="correction").count() == 50


def staff_client(role):
    client = Client()
    client.force_login(make_user(role, is_staff=True))
    return client


def upload(client, text, dry_run=False, stock_corrections=False):
    data = {"file": SimpleUploadedFile("widgets.csv", text.encode(), content_type="text/csv")}
    if dry_run:
        data["dry_run"] = "on"
    if stock_corrections:
        data["stock_corrections"] = "on"
    return client.post("/admin/widgets/widget/import/", data, follow=True)


class TestAdminImportPage:
    def test_changelist_links_to_the_import_page(self):
        html = staff_client("manager").get("/admin/widgets/widget/").content.decode()

        assert "/admin/widgets/widget/import/" in html

    def test_upload_imports_and_redirects_to_the_list_with_a_summary(self):
        client = staff_client("manager")

        response = upload(client, f"{HEADER}\nUP-1,Uploaded,,,2.00,1,true,6\n")

        assert response.redirect_chain[-1][0] == "/admin/widgets/widget/"
        assert "Imported: 1 created, 0 updated, 0 stock corrections, 0 unchanged." in response.content.decode()
        widget = Widget.objects.get(sku="UP-1")
        assert widget.stock == 6
        assert widget.movements.get().created_by == response.wsgi_request.user

    def test_dry_run_previews_without_writing(self, create_widget):
        create_widget(sku="OLD-1", stock=1)
        before = snapshot()

        response = upload(
            staff_client("manager"), f"{HEADER}\nOLD-1,Renamed,,,0,0,true,9\n", dry_run=True, stock_corrections=True
        )

        html = response.content.decode()
        assert "Dry run: nothing was written" in html
        assert "stock 1 &rarr; 9" in html
        assert snapshot() == before

    def test_errors_are_listed_by_row_and_column(self):
        response = upload(staff_client("manager"), f"{HEADER}\nA-1,A,,,cheap,0,true,1\n")

        html = response.content.decode()
        assert "1 error: nothing was imported" in html
        assert "<td>2</td><td>price</td><td>Must be a number, e.g. 12.50.</td>" in html
        assert not Widget.objects.exists()

    def test_binary_upload_is_a_form_error(self):
        client = staff_client("manager")
        data = {"file": SimpleUploadedFile("x.csv", b"\xff\xfe\x00bad", content_type="text/csv")}

        response = client.post("/admin/widgets/widget/import/", data)

        assert response.status_code == 200
        assert "The file is not UTF-8 text." in response.content.decode()

    @pytest.mark.parametrize("role", ["viewer", "clerk"])
    def test_roles_that_cannot_create_widgets_get_403(self, role):
        assert staff_client(role).get("/admin/widgets/widget/import/").status_code == 403


class TestStaleFiles:
    """An import never reverts what changed since its file was exported."""

    def export(self, viewer, tmp_path):
        path = tmp_path / "export.csv"
        path.write_bytes(b"".join(viewer.get("/api/widgets/?format=csv").streaming_content))
        return str(path)

    @pytest.mark.parametrize("dry_run", [False, True])
    def test_a_row_whose_widget_changed_since_the_export_is_refused(self, tmp_path, viewer, create_widget, dry_run):
        widget = create_widget(sku="BOLT-1", stock=0)
        path = self.export(viewer, tmp_path)
        staff_client("manager").post(
            f"/admin/widgets/widget/{widget['id']}/adjust/", {"delta": "30", "reason": "received"}
        )
        assert Widget.objects.get(pk=widget["id"]).stock == 30
        before = snapshot()
        err = io.StringIO()

        with pytest.raises(CommandError, match="nothing was imported"):
            call_command("import_widgets", path, *(["--dry-run"] if dry_run else []), stderr=err, verbosity=0)

        assert "row 2, version: changed since the export: version 1, now 2" in err.getvalue().splitlines()
        assert snapshot() == before

    def test_the_admin_lists_stale_rows_and_applies_nothing(self, tmp_path, viewer, create_widget, clerk):
        widget = create_widget(sku="BOLT-1", stock=5)
        text = open(self.export(viewer, tmp_path)).read()
        clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -2, "reason": "sold"}, format="json")
        before = snapshot()

        html = upload(staff_client("manager"), text).content.decode()

        assert "1 error: nothing was imported" in html
        assert "<td>2</td><td>version</td><td>changed since the export: version 1, now 2</td>" in html
        assert snapshot() == before

    def test_a_current_export_may_change_stock_as_a_correction(self, tmp_path, viewer, create_widget):
        widget = create_widget(sku="BOLT-1", stock=5)
        path = self.export(viewer, tmp_path)
        edited = open(path).read().replace("true,5,1", "true,9,1")
        assert edited != open(path).read()

        out, _ = run_import(write_csv(tmp_path, edited, "edited.csv"))

        assert "1 stock corrections" in out
        newest = StockMovement.objects.filter(widget_id=widget["id"]).latest("id")
        assert (newest.reason, newest.delta, newest.stock_after) == ("correction", 4, 9)

    def test_without_versions_changing_stock_needs_the_explicit_option(self, tmp_path, create_widget):
        create_widget(sku="BOLT-1", stock=30)
        path = write_csv(tmp_path, f"{HEADER}\nBOLT-1,Bolt,,,0,0,true,0\n")
        before = snapshot()
        err = io.StringIO()

        with pytest.raises(CommandError, match="nothing was imported"):
            call_command("import_widgets", path, stderr=err, verbosity=0)
        assert "row 2, stock: 30 in stock now, 0 in the file" in err.getvalue()
        assert snapshot() == before

        out, _ = run_import(path, "--dry-run", "--stock-corrections")
        assert "stock  BOLT-1: 30 -> 0" in out
        assert snapshot() == before

        run_import(path, "--stock-corrections")
        assert Widget.objects.get(sku="BOLT-1").stock == 0

    def test_without_versions_other_fields_and_unchanged_stock_need_no_option(self, tmp_path, create_widget):
        create_widget(sku="BOLT-1", name="Bolt", stock=30)

        run_import(write_csv(tmp_path, f"{HEADER}\nBOLT-1,Bolt M8,,,0,0,true,30\n"))

        assert Widget.objects.values_list("name", "stock").get(sku="BOLT-1") == ("Bolt M8", 30)

    def test_the_admin_checkbox_allows_stock_from_a_file_without_versions(self, create_widget):
        create_widget(sku="BOLT-1", stock=30)
        text = f"{HEADER}\nBOLT-1,Bolt,,,0,0,true,0\n"

        refused = upload(staff_client("manager"), text).content.decode()
        assert "<td>2</td><td>stock</td>" in refused
        assert Widget.objects.get(sku="BOLT-1").stock == 30

        upload(staff_client("manager"), text, stock_corrections=True)
        assert Widget.objects.get(sku="BOLT-1").stock == 0


class TestAdminKeepsTheCheckedFile:
    def test_after_a_dry_run_the_file_is_applied_without_a_second_upload(self, create_widget):
        create_widget(sku="BOLT-1", name="Bolt", stock=30)
        client = staff_client("manager")
        text = f"{HEADER}\nBOLT-1,Bolt,,,0,0,true,0\nNEW-1,New,,,1,0,true,2\n"
        preview = upload(client, text, dry_run=True, stock_corrections=True).content.decode()
        assert "stock 30 &rarr; 0" in preview
        assert not Widget.objects.filter(sku="NEW-1").exists()
        [token] = re.findall(r'name="pending" value="([^"]+)"', preview)

        response = client.post(
            "/admin/widgets/widget/import/", {"pending": token, "stock_corrections": "on"}, follow=True
        )

        assert "Imported: 1 created, 0 updated, 1 stock corrections, 0 unchanged." in response.content.decode()
        assert Widget.objects.get(sku="BOLT-1").stock == 0
        assert Widget.objects.get(sku="NEW-1").stock == 2
        # Applied once: the kept file is gone.
        again = client.post("/admin/widgets/widget/import/", {"pending": token, "stock_corrections": "on"})
        assert "Choose a file to import." in again.content.decode()

    def test_a_token_from_another_session_applies_nothing(self):
        client = staff_client("manager")
        preview = upload(client, f"{HEADER}\nNEW-1,New,,,1,0,true,2\n", dry_run=True).content.decode()
        [token] = re.findall(r'name="pending" value="([^"]+)"', preview)

        response = staff_client("manager").post("/admin/widgets/widget/import/", {"pending": token})

        assert "Choose a file to import." in response.content.decode()
        assert not Widget.objects.exists()
