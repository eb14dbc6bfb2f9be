"""Roles are Django groups: viewer < clerk < manager. Superusers need none."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = [
    "view_category",
    "view_widget",
    "view_stockmovement",
]
CLERK = VIEWER + ["add_stockmovement"]
MANAGER = CLERK + [
    "add_widget", "change_widget", "delete_widget",
    "add_category", "change_category", "delete_category",
]
ROLES = {"viewer": VIEWER, "clerk": CLERK, "manager": MANAGER}


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations have run; make sure ours
    # exist now so that the groups can be given them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="widgets", codename__in=codenames)
        )


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("widgets", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
