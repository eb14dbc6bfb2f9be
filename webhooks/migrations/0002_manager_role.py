"""The manager role (widgets migration 0002) also manages webhook subscriptions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

MANAGER = [
    "view_webhooksubscription",
    "add_webhooksubscription",
    "change_webhooksubscription",
    "delete_webhooksubscription",
    "view_delivery",
]


def grant(apps, schema_editor):
    app_config = apps.get_app_config("webhooks")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="manager")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="webhooks", codename__in=MANAGER))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name="manager"):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="webhooks", codename__in=MANAGER))


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("widgets", "0002_roles"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
