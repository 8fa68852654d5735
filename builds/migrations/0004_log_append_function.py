"""A drone's log append as one database function, so a `PATCH /builds/<id>/log` is one round trip.

The source is builds/sql/swarm_agent_log_append.sql (swarm/core/sql_files.py); a fresh database gets
today's file here, and builds/migrations/0009_agent_functions_from_files loads the current set.
"""
from django.db import migrations

from swarm.core.sql_files import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0003_claim_functions"),
    ]

    operations = [
        RunSQLFile("builds/sql/swarm_agent_log_append.sql",
                   sha256="e220e29a51e4bc1bf6f0458bd60077150f161cfcb38aa9d849be7a7593d1252e",
                   reverse_sql="DROP FUNCTION IF EXISTS swarm_agent_log_append"),
    ]
