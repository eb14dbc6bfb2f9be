"""Each movement reason's sign, checked by PostgreSQL too: received, returned and initial add
stock, sold and damaged remove it, a correction goes either way (widgets.services.check_movement
is the rule every write goes through; this is the database's guard behind it).

Added NOT VALID: the ledger is append-only and may already hold movements written before the
rule, which can be neither changed nor removed. PostgreSQL then checks every new row but not
the old ones. SQLite cannot add a constraint to an existing table without rebuilding it (and
checking the history), so there the service's check stands alone.
"""
from django.db import migrations

NAME = "movement_reason_sign"
CHECK = (
    "(reason IN ('received', 'returned', 'initial') AND delta > 0)"
    " OR (reason IN ('sold', 'damaged') AND delta < 0)"
    " OR reason = 'correction'"
)


def add(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE widgets_stockmovement ADD CONSTRAINT {NAME} CHECK ({CHECK}) NOT VALID")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE widgets_stockmovement DROP CONSTRAINT IF EXISTS {NAME}")


class Migration(migrations.Migration):
    dependencies = [("widgets", "0007_input_rules")]

    operations = [migrations.RunPython(add, drop, elidable=False)]
