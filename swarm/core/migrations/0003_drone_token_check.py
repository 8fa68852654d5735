"""The drone token rule as one database function (`swarm/core/sql/swarm_drone_token_check.sql`).

Every SQL path of the agent protocol finds its drone through it: `swarm_agent_touch` (claims and log
appends on both paths), the heartbeat statement and the deploy report's target lock.
"""
from django.db import migrations

from swarm.core.sql_files import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0002_tenant_moves_to_tenancy"),
    ]

    operations = [
        RunSQLFile("swarm/core/sql/swarm_drone_token_check.sql",
                   sha256="883fdf65971944f76cbc5fc1e52c9979d1cb9346b259eaaf3dcd997fd4192b3b",
                   reverse_sql="DROP FUNCTION IF EXISTS swarm_drone_token_check"),
    ]
