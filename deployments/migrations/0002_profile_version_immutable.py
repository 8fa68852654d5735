"""Profile versions are immutable: a trigger refuses every UPDATE of a version row."""
from django.db import migrations

from swarm.core.sql_files import RunSQLFile

CREATE_TRIGGER = """
CREATE TRIGGER deployments_profile_version_immutable
BEFORE UPDATE ON deployments_profileversion
FOR EACH ROW EXECUTE FUNCTION swarm_profile_version_immutable();
"""

DROP_TRIGGER = "DROP TRIGGER IF EXISTS deployments_profile_version_immutable ON deployments_profileversion;"


class Migration(migrations.Migration):
    dependencies = [("deployments", "0001_initial")]

    operations = [
        RunSQLFile("deployments/sql/swarm_profile_version_immutable.sql",
                   sha256="05c6470901a3de5b77ccf700c26ae52dafad8cb2c524065e940c7b9b1769eb91",
                   reverse_sql="DROP FUNCTION IF EXISTS swarm_profile_version_immutable();"),
        migrations.RunSQL(CREATE_TRIGGER, DROP_TRIGGER),
    ]
