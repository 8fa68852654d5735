"""`swarm_agent_touch` checks the token through `swarm_drone_token_check` (core 0003) instead of its own copy."""
from django.db import migrations

from swarm.core.sql_files import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0009_agent_functions_from_files"),
        ("core", "0003_drone_token_check"),
    ]

    operations = [
        RunSQLFile("builds/sql/swarm_agent_touch.sql",
                   sha256="563240c1cf5919620e5bd81deb4e9be2fa71de903eae67b08f5118d02a83f41b"),
    ]
