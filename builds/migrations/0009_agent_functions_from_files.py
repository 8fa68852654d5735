"""The agent protocol's database functions, one `.sql` file each in builds/sql/, loaded from the files.

One implementation per agent operation, called by Django's views and by the event loop alike:
lease renewal (`swarm_drone_leases_renew`, which `swarm_agent_touch` calls after the token check),
a drone's claim (`swarm_drone_build_claim`: `build_claim` calls it, and `swarm_agent_build_claims`
for each request of a group) and a drone's log append (`swarm_build_log_append`: `build_log_append`
calls it, and `swarm_agent_log_append` after the token check). swarm/core/tests/test_sql_files.py
checks that the database holds exactly these files.
"""
from django.db import migrations

from swarm.core.sql_files import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0008_source_failure_and_repository_default_branch"),
    ]

    operations = [
        RunSQLFile("builds/sql/swarm_drone_leases_renew.sql",
                   sha256="2c8ac13b5e730b14615422498555bbe3ec1fa74529769b8b3b44f7e1e2f0de0e"),
        RunSQLFile("builds/sql/swarm_lock_drone_claims.sql",
                   sha256="c73227575c60f2de8ad41fcb8dcfb79d5977309844877620b3257eca79f2a709"),
        RunSQLFile("builds/sql/swarm_agent_touch.sql",
                   sha256="011ff26a09320f0be4c6a088e6bfd55017dd5f20d5a7609fc84a78a2a8f7f21b"),
        RunSQLFile("builds/sql/swarm_build_claim.sql",
                   sha256="e517280eb8dc473f02437665099a7a828500a0cdbdadd56c707c3f171ca9a8c7"),
        RunSQLFile("builds/sql/swarm_drone_build_claim.sql",
                   sha256="1b0468ed8ff73fe24025da0a6d82b8fccd736c5d23b662bc3a098f4824778296"),
        RunSQLFile("builds/sql/swarm_agent_build_claims.sql",
                   sha256="a6aa42a277abf08332e2109cea03567e178cae074807f23e65ec8eeedd5e318a"),
        RunSQLFile("builds/sql/swarm_build_log_append.sql",
                   sha256="bf14f52e932a092ecf0b7895f0072e51d47af2d9adf560f33b445b3c48a3c119"),
        RunSQLFile("builds/sql/swarm_agent_log_append.sql",
                   sha256="e220e29a51e4bc1bf6f0458bd60077150f161cfcb38aa9d849be7a7593d1252e"),
    ]
