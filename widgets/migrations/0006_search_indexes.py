"""Trigram indexes for ``search`` (``icontains`` on sku, name and description), on
PostgreSQL only: a substring search then reads the index instead of every row.

The indexed expression is exactly what Django's ``icontains`` compiles to on
PostgreSQL, ``UPPER(column::text) LIKE UPPER(pattern)``, so the planner can use it.
SQLite has no trigram indexes; there the migration does nothing.
"""
from django.db import migrations

COLUMNS = ["sku", "name", "description"]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS widget_{column}_trgm ON widgets_widget "
            f"USING gin ((UPPER({column}::text)) gin_trgm_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS widget_{column}_trgm")


class Migration(migrations.Migration):
    dependencies = [("widgets", "0005_changelog")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
