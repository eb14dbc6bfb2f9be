"""The change log, readable by every role (viewer, clerk, manager)."""
import django.db.models.deletion
from django.contrib.auth.management import create_permissions
from django.conf import settings
from django.db import migrations, models

ROLES = ["viewer", "clerk", "manager"]


def grant_view_permission(apps, schema_editor):
    # Permissions are normally created after all migrations have run; create ours now.
    app_config = apps.get_app_config("widgets")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.get(content_type__app_label="widgets", codename="view_changelogentry")
    for group in Group.objects.filter(name__in=ROLES):
        group.permissions.add(view)


def revoke_view_permission(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(content_type__app_label="widgets", codename="view_changelogentry").delete()


class Migration(migrations.Migration):

    dependencies = [
        ('widgets', '0004_low_stock_urgency_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ChangeLogEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('timestamp', models.DateTimeField(auto_now_add=True)),
                ('action', models.CharField(choices=[('create', 'Create'), ('update', 'Update'), ('delete', 'Delete')], max_length=10)),
                ('object_type', models.CharField(choices=[('widget', 'Widget'), ('category', 'Category')], max_length=20)),
                ('object_id', models.PositiveBigIntegerField()),
                ('object_repr', models.CharField(max_length=200)),
                ('changes', models.JSONField(default=dict)),
                ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='change_log_entries', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'change log entry',
                'verbose_name_plural': 'change log entries',
                'ordering': ['-timestamp', '-id'],
                'indexes': [models.Index(fields=['-timestamp', '-id'], name='changelog_newest'), models.Index(fields=['object_type', 'object_id'], name='changelog_object')],
            },
        ),
        migrations.RunPython(grant_view_permission, revoke_view_permission),
    ]
