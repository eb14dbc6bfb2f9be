"""The change log: every create, update and delete of a widget or category, from the API
or the admin, with who, when and which fields changed; readable at GET /api/changes/."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.conftest import make_user
from widgets.models import ChangeLogEntry, Widget

pytestmark = pytest.mark.django_db


def entries(**filters):
    return list(ChangeLogEntry.objects.filter(**filters).order_by("id"))


class TestWrittenByTheApi:
    def test_widget_create_records_every_set_field(self, manager, create_category):
        category = create_category(name="Tools")

        widget = manager.post(
            "/api/widgets/",
            {"name": "Spanner", "sku": "SP-1", "price": "2.5", "stock": 4, "category": category["id"]},
            format="json",
        ).json()

        [entry] = entries(object_type="widget")
        assert (entry.action, entry.object_id, entry.object_repr) == ("create", widget["id"], "SP-1 Spanner")
        assert entry.user == manager.user
        assert entry.changes == {
            "sku": [None, "SP-1"],
            "name": [None, "Spanner"],
            "description": [None, ""],
            "category": [None, category["id"]],
            "price": [None, "2.50"],
            "stock": [None, 4],
            "reorder_level": [None, 0],
            "is_active": [None, True],
        }

    def test_values_are_recorded_as_the_api_shows_them(self, manager, viewer):
        """A price left at its default is the string "0.00", as GET shows it, not the number 0."""
        created = manager.post("/api/widgets/", {"name": "Plain", "sku": "PLAIN-1"}, format="json")
        assert created.status_code == 201, created.content

        [entry] = viewer.get("/api/changes/", {"object_id": created.json()["id"]}).json()["results"]
        shown = viewer.get(f"/api/widgets/{created.json()['id']}/").json()

        assert entry["changes"]["price"] == [None, "0.00"]
        assert entry["changes"] == {field: [None, shown[field]] for field in entry["changes"]}
        assert set(entry["changes"]) == {"sku", "name", "description", "price", "stock", "reorder_level", "is_active"}

    def test_widget_update_records_only_changed_fields_old_and_new(self, manager, create_widget):
        widget = create_widget(name="Bolt", price="1.00")

        manager.patch(f"/api/widgets/{widget['id']}/", {"price": "1.5", "name": "Bolt"}, format="json")

        [entry] = entries(action="update")
        assert entry.changes == {"price": ["1.00", "1.50"]}
        assert entry.object_id == widget["id"]
        assert entry.user == manager.user

    def test_update_that_changes_nothing_writes_no_entry(self, manager, create_widget):
        widget = create_widget(name="Bolt")

        response = manager.patch(f"/api/widgets/{widget['id']}/", {"name": "Bolt"}, format="json")

        assert response.status_code == 200
        assert entries(action="update") == []

    def test_widget_delete_records_the_last_values(self, manager, create_widget):
        widget = create_widget(name="Nut", sku="NUT-1")

        assert manager.delete(f"/api/widgets/{widget['id']}/").status_code == 204

        [entry] = entries(action="delete")
        assert (entry.object_type, entry.object_id, entry.object_repr) == ("widget", widget["id"], "NUT-1 Nut")
        assert entry.changes["sku"] == ["NUT-1", None]
        assert entry.changes["name"] == ["Nut", None]

    def test_category_create_update_and_delete(self, manager, create_category):
        category = create_category(name="Fittings")
        manager.patch(f"/api/categories/{category['id']}/", {"name": "Pipe Fittings"}, format="json")
        manager.delete(f"/api/categories/{category['id']}/")

        log = entries(object_type="category")
        assert [e.action for e in log] == ["create", "update", "delete"]
        assert log[0].changes == {"name": [None, "Fittings"], "slug": [None, "fittings"], "description": [None, ""]}
        assert log[1].changes == {"name": ["Fittings", "Pipe Fittings"], "slug": ["fittings", "pipe-fittings"]}
        assert log[2].changes["name"] == ["Pipe Fittings", None]
        assert {e.object_id for e in log} == {category["id"]}

    def test_stock_adjustments_write_no_entry(self, clerk, create_widget):
        widget = create_widget(stock=5)
        before = ChangeLogEntry.objects.count()

        response = clerk.post(f"/api/widgets/{widget['id']}/adjust/", {"delta": -2, "reason": "sold"}, format="json")

        assert response.status_code == 201
        assert ChangeLogEntry.objects.count() == before

    def test_refused_change_writes_no_entry(self, manager, clerk, create_widget, create_category):
        widget = create_widget(stock=5)  # has history: cannot be deleted
        category = create_category()
        manager.patch(f"/api/widgets/{widget['id']}/", {"category": category["id"]}, format="json")
        before = ChangeLogEntry.objects.count()

        assert manager.delete(f"/api/widgets/{widget['id']}/").status_code == 409
        assert manager.delete(f"/api/categories/{category['id']}/").status_code == 409
        assert manager.patch(f"/api/widgets/{widget['id']}/", {"price": "-1"}, format="json").status_code == 400
        assert ChangeLogEntry.objects.count() == before


class TestWrittenByTheAdmin:
    """The admin calls the same services, so its changes are logged the same way."""

    @pytest.fixture
    def staff(self, client):
        user = make_user(is_staff=True, is_superuser=True)
        client.force_login(user)
        client.user = user
        return client

    def test_add_change_and_delete_through_the_admin(self, staff):
        response = staff.post(
            "/admin/widgets/widget/add/",
            {
                "sku": "ADM-1",
                "name": "Clamp",
                "description": "",
                "price": "3.00",
                "reorder_level": "0",
                "is_active": "on",
                "movements-TOTAL_FORMS": "0",
                "movements-INITIAL_FORMS": "0",
            },
        )
        assert response.status_code == 302, response.content
        widget = Widget.objects.get(sku="ADM-1")

        response = staff.post(
            f"/admin/widgets/widget/{widget.pk}/change/",
            {
                "sku": "ADM-1",
                "name": "Big Clamp",
                "description": "",
                "price": "3.00",
                "reorder_level": "2",
                "is_active": "on",
                "movements-TOTAL_FORMS": "0",
                "movements-INITIAL_FORMS": "0",
            },
        )
        assert response.status_code == 302, response.content
        response = staff.post(f"/admin/widgets/widget/{widget.pk}/delete/", {"post": "yes"})
        assert response.status_code == 302

        log = entries(object_type="widget", object_id=widget.pk)
        assert [e.action for e in log] == ["create", "update", "delete"]
        assert {e.user for e in log} == {staff.user}
        assert log[1].changes == {"name": ["Clamp", "Big Clamp"], "reorder_level": [0, 2]}

    def test_delete_selected_action_logs_each_object(self, staff, create_widget):
        widgets = [create_widget(), create_widget()]

        response = staff.post(
            "/admin/widgets/widget/",
            {"action": "delete_selected", "post": "yes", "_selected_action": [w["id"] for w in widgets]},
        )

        assert response.status_code == 302
        assert not Widget.objects.filter(pk__in=[w["id"] for w in widgets]).exists()
        assert {e.object_id for e in entries(action="delete")} == {w["id"] for w in widgets}

    def test_change_log_admin_is_read_only(self, staff, create_widget):
        create_widget(name="Listed")
        entry = ChangeLogEntry.objects.get()

        assert staff.get("/admin/widgets/changelogentry/").status_code == 200
        assert "Listed" in staff.get(f"/admin/widgets/changelogentry/{entry.pk}/change/").content.decode()
        assert staff.get("/admin/widgets/changelogentry/add/").status_code == 403
        assert staff.post(f"/admin/widgets/changelogentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
        assert ChangeLogEntry.objects.filter(pk=entry.pk).exists()


class TestWrittenByTheCsvImport:
    """Imports create and update widgets in bulk; each widget still gets its entry."""

    HEADER = "sku,name,description,category,price,reorder_level,is_active,stock"

    def test_import_logs_creates_and_updates_but_not_stock_corrections(self, create_widget):
        old = create_widget(sku="OLD-1", name="Old", stock=5, price="1.00")
        same = create_widget(sku="SAME-1", name="Same", stock=1)
        staff = make_user("manager", is_staff=True)
        client = Client()
        client.force_login(staff)
        before = ChangeLogEntry.objects.count()
        text = f"{self.HEADER}\nOLD-1,Old,,,1.50,0,true,9\nSAME-1,Same,,,0.00,0,true,4\nNEW-1,Fresh,,,2.00,0,true,3\n"

        response = client.post(
            "/admin/widgets/widget/import/",
            {
                "file": SimpleUploadedFile("widgets.csv", text.encode(), content_type="text/csv"),
                "stock_corrections": "on",
            },
            follow=True,
        )

        assert response.status_code == 200
        log = list(ChangeLogEntry.objects.order_by("id")[before:])
        fresh = Widget.objects.get(sku="NEW-1")
        assert {(e.action, e.object_id) for e in log} == {("update", old["id"]), ("create", fresh.pk)}
        assert {e.user for e in log} == {staff}
        update = next(e for e in log if e.action == "update")
        assert update.changes == {"price": ["1.00", "1.50"]}  # the stock change is in the ledger
        create = next(e for e in log if e.action == "create")
        assert create.changes["name"] == [None, "Fresh"]
        assert create.changes["stock"] == [None, 3]
        assert not ChangeLogEntry.objects.filter(object_type="widget", object_id=same["id"], action="update").exists()

    def test_a_change_by_no_user_is_listed_with_user_null_as_documented(self, tmp_path, viewer):
        path = tmp_path / "widgets.csv"
        path.write_text(f"{self.HEADER}\nCMD-1,By a command,,,1.00,0,true,2\n", encoding="utf-8")
        call_command("import_widgets", str(path), stdout=StringIO())  # no user: the command line

        listed = viewer.get("/api/changes/", {"object_type": "widget"}).json()["results"]
        schema = viewer.get("/api/schema/", {"format": "json"}).json()

        assert [(e["object_repr"], e["user"]) for e in listed] == [("CMD-1 By a command", None)]
        assert schema["components"]["schemas"]["ChangeLogEntry"]["properties"]["user"]["nullable"] is True

    def test_dry_run_logs_nothing(self, tmp_path, create_widget):
        create_widget(sku="OLD-1", name="Old")
        before = ChangeLogEntry.objects.count()
        path = tmp_path / "widgets.csv"
        path.write_text(f"{self.HEADER}\nOLD-1,Renamed,,,0,0,true,0\nNEW-1,New,,,0,0,true,0\n")

        call_command("import_widgets", str(path), "--dry-run", stdout=StringIO())

        assert ChangeLogEntry.objects.count() == before


class TestChangesEndpoint:
    """GET /api/changes/: paginated, newest first, filterable."""

    def test_entry_shape_and_newest_first(self, viewer, manager, create_widget):
        first = create_widget(name="First")
        second = create_widget(name="Second")

        body = viewer.get("/api/changes/").json()

        assert body["count"] == 2
        newest = body["results"][0]
        assert set(newest) == {
            "id",
            "timestamp",
            "user",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "changes",
        }
        assert [e["object_id"] for e in body["results"]] == [second["id"], first["id"]]
        assert (newest["user"], newest["action"], newest["object_type"]) == (manager.user.username, "create", "widget")
        assert newest["changes"]["name"] == [None, "Second"]

    def test_is_paginated(self, viewer, create_widget):
        for _ in range(3):
            create_widget()

        body = viewer.get("/api/changes/?limit=2").json()

        assert (body["count"], len(body["results"])) == (3, 2)
        assert body["next"] is not None

    def test_filters_by_object_type_object_id_and_user(self, viewer, manager, create_widget, create_category):
        widget = create_widget()
        create_widget()
        create_category()
        other_manager = make_user("manager")
        manager.force_authenticate(other_manager)  # the same client, acting as someone else
        create_widget()

        def ids(query):
            response = viewer.get(f"/api/changes/?{query}")
            assert response.status_code == 200, response.content
            return [(e["object_type"], e["object_id"]) for e in response.json()["results"]]

        assert {t for t, _ in ids("object_type=category")} == {"category"}
        assert len(ids("object_type=widget")) == 3
        assert ids(f"object_type=widget&object_id={widget['id']}") == [("widget", widget["id"])]
        assert len(ids(f"user={other_manager.username}")) == 1
        assert ids("user=nobody") == []

    def test_since_is_inclusive(self, viewer, create_widget):
        create_widget()
        create_widget()
        older, newer = ChangeLogEntry.objects.order_by("id")

        exactly = viewer.get("/api/changes/", {"since": newer.timestamp.isoformat()}).json()
        just_after = viewer.get(
            "/api/changes/", {"since": (newer.timestamp + timedelta(microseconds=1)).isoformat()}
        ).json()
        earlier = viewer.get("/api/changes/", {"since": older.timestamp.isoformat()}).json()

        assert newer.id in [e["id"] for e in exactly["results"]]
        assert just_after["count"] == 0
        assert earlier["count"] == 2

    @pytest.mark.parametrize(
        "query, field",
        [
            ("since=yesterday", "since"),
            ("since=2026-13-01T00:00:00Z", "since"),
            ("object_type=stock", "object_type"),
            ("object_id=abc", "object_id"),
        ],
    )
    def test_invalid_filter_is_400_naming_it(self, viewer, query, field):
        response = viewer.get(f"/api/changes/?{query}")

        assert response.status_code == 400
        assert field in response.json()

    @pytest.mark.parametrize("role", ["viewer", "clerk", "manager"])
    def test_every_role_may_read(self, request, role):
        assert request.getfixturevalue(role).get("/api/changes/").status_code == 200

    def test_viewer_group_has_the_view_permission(self):
        viewer_group = Group.objects.get(name="viewer")

        assert viewer_group.permissions.filter(codename="view_changelogentry").exists()

    def test_no_role_is_403_and_anonymous_401(self, no_role, anon):
        assert no_role.get("/api/changes/").status_code == 403
        assert anon.get("/api/changes/").status_code == 401

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    def test_read_only_for_everyone(self, superuser, create_widget, method):
        create_widget()
        entry = ChangeLogEntry.objects.get()
        path = "/api/changes/" if method == "post" else f"/api/changes/{entry.pk}/"

        response = getattr(superuser, method)(path, {}, format="json")

        assert response.status_code == 405
        assert ChangeLogEntry.objects.filter(pk=entry.pk).exists()

    def test_list_queries_do_not_grow_with_the_page(self, viewer, create_widget):
        def queries_for_list():
            with CaptureQueriesContext(connection) as queries:
                assert viewer.get("/api/changes/").status_code == 200
            return len(queries)

        create_widget()
        viewer.get("/api/changes/")  # the token's last_used_at is written on first use only
        one = queries_for_list()
        for _ in range(10):
            create_widget()

        assert queries_for_list() == one
