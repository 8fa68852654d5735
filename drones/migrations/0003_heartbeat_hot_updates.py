from django.db import migrations, models


class Migration(migrations.Migration):
    """Heartbeats become HOT updates: no index on last_heartbeat_at, room on each page for the new row version."""

    dependencies = [
        ("drones", "0002_join_token_plaintext"),
    ]

    operations = [
        migrations.AlterField(
            model_name="drone",
            name="last_heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunSQL(
            "ALTER TABLE drones_drone SET (fillfactor = 50)",
            reverse_sql="ALTER TABLE drones_drone RESET (fillfactor)",
        ),
    ]
