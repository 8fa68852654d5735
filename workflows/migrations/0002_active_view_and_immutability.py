"""The `active_workflow_versions` SQL view and the trigger that keeps versions immutable."""
from django.db import migrations

CREATE_VIEW = """
CREATE VIEW active_workflow_versions AS
SELECT v.id AS version_id,
       w.id AS workflow_id,
       t.id AS tenant_id,
       t.slug AS tenant_slug,
       w.slug AS workflow_slug,
       v.version AS version_label,
       b.sha256 AS bundle_hash,
       b.size AS bundle_size,
       w.runtime,
       w.entrypoint,
       w.memory_mb,
       w.timeout_sec,
       v.activated_at
  FROM workflows_workflowversion v
  JOIN workflows_workflow w ON w.id = v.workflow_id
  JOIN workflows_tenant t ON t.id = w.tenant_id
  JOIN bundles_bundle b ON b.id = v.bundle_id
 WHERE v.is_active;
"""

CREATE_TRIGGER = """
CREATE FUNCTION workflows_version_immutable() RETURNS trigger AS $$
BEGIN
    IF NEW.version IS DISTINCT FROM OLD.version
       OR NEW.bundle_id IS DISTINCT FROM OLD.bundle_id
       OR NEW.workflow_id IS DISTINCT FROM OLD.workflow_id
       OR NEW.metadata IS DISTINCT FROM OLD.metadata
       OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'workflow version % is immutable', OLD.id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER workflows_version_immutable
BEFORE UPDATE ON workflows_workflowversion
FOR EACH ROW EXECUTE FUNCTION workflows_version_immutable();
"""


class Migration(migrations.Migration):
    dependencies = [("workflows", "0001_initial"), ("bundles", "0001_initial")]

    operations = [
        migrations.RunSQL(CREATE_VIEW, "DROP VIEW IF EXISTS active_workflow_versions;"),
        migrations.RunSQL(
            CREATE_TRIGGER,
            "DROP TRIGGER IF EXISTS workflows_version_immutable ON workflows_workflowversion;"
            "DROP FUNCTION IF EXISTS workflows_version_immutable();",
        ),
    ]
