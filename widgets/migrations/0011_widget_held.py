# Widget.held: the units of active reservations (by stored status), backfilled here and
# kept by widgets.services under the widget's row lock.

from django.db import migrations, models

BACKFILL = """
UPDATE widgets_widget SET held = COALESCE((
    SELECT SUM(i.quantity) FROM widgets_reservationitem i
    INNER JOIN widgets_reservation r ON r.id = i.reservation_id
    WHERE i.widget_id = widgets_widget.id AND r.status = 'active'
), 0)
WHERE id IN (SELECT i.widget_id FROM widgets_reservationitem i
             INNER JOIN widgets_reservation r ON r.id = i.reservation_id WHERE r.status = 'active')
"""


class Migration(migrations.Migration):
    # Re-pointed at ("widgets", "0010_reservation_expiry_recorded") when merged after it.
    dependencies = [
        ("widgets", "0010_reservation_expiry_recorded"),
    ]

    operations = [
        migrations.AddField(
            model_name="widget",
            name="held",
            field=models.PositiveIntegerField(default=0, db_default=0, editable=False),
        ),
        migrations.RunSQL(BACKFILL, reverse_sql=migrations.RunSQL.noop),
    ]
