"""The claim and the agent's authentication as database functions, so claims take one round trip.

The functions' sources are `.sql` files in builds/sql/ (swarm/core/sql_files.py); this migration
first created them, and a fresh database gets today's files here. What each does is said in its
file; builds/migrations/0009_agent_functions_from_files loads the current set.
"""
from django.db import migrations

from swarm.core.sql_files import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0002_default_queues"),
        ("drones", "0003_heartbeat_hot_updates"),
        ("core", "0001_initial"),
    ]

    operations = [
        RunSQLFile("builds/sql/swarm_agent_touch.sql",
                   sha256="011ff26a09320f0be4c6a088e6bfd55017dd5f20d5a7609fc84a78a2a8f7f21b",
                   reverse_sql="DROP FUNCTION IF EXISTS swarm_agent_touch"),
        RunSQLFile("builds/sql/swarm_lock_drone_claims.sql",
                   sha256="c73227575c60f2de8ad41fcb8dcfb79d5977309844877620b3257eca79f2a709",
                   reverse_sql="DROP FUNCTION IF EXISTS swarm_lock_drone_claims"),
        RunSQLFile("builds/sql/swarm_build_claim.sql",
                   sha256="e517280eb8dc473f02437665099a7a828500a0cdbdadd56c707c3f171ca9a8c7",
                   reverse_sql="DROP FUNCTION IF EXISTS swarm_build_claim"),
        RunSQLFile("builds/sql/swarm_agent_build_claims.sql",
                   sha256="a6aa42a277abf08332e2109cea03567e178cae074807f23e65ec8eeedd5e318a",
                   reverse_sql="DROP FUNCTION IF EXISTS swarm_agent_build_claims"),
    ]
