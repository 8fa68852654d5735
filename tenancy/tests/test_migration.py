"""Moving `Tenant` to the tenancy app moves Django's state only: same table, same rows, same constraints, no DDL."""
from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import ProtectedError

#: The last migration of each app before the move.
BEFORE_MOVE = [
    ("workflows", "0004_tenant_secret_encrypted_column"),
    ("builds", "0005_encrypt_job_webhook_secret"),
    ("core", "0001_initial"),
    ("contenttypes", "0002_remove_content_type_name"),
    ("auth", "0012_alter_user_first_name_max_length"),
]
#: The migrations of the move itself (state only): tenancy's, and each app's that repoints its keys.
THE_MOVE = [
    ("tenancy", "0001_initial"),
    ("workflows", "0005_tenant_moves_to_tenancy"),
    ("builds", "0006_job_tenant_moves_to_tenancy"),
    ("core", "0002_tenant_moves_to_tenancy"),
    ("deployments", "0003_tenant_moves_to_tenancy"),
]
DDL = ("CREATE ", "ALTER ", "DROP ", "TRUNCATE ", "RENAME ")


def _table_identity() -> tuple:
    """The tenants table's oid and file (a rewrite changes the file), and the foreign keys pointing at it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT oid, relfilenode FROM pg_class WHERE relname = 'workflows_tenant'")
        table = cursor.fetchone()
        cursor.execute("SELECT conname, conrelid::regclass::text FROM pg_constraint "
                       "WHERE confrelid = 'workflows_tenant'::regclass ORDER BY conname")
        return table, cursor.fetchall()


@pytest.mark.django_db(transaction=True)
def test_tenants_move_to_the_tenancy_app_with_their_rows_and_foreign_keys():
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    from builds.models import Job
    from swarm.core.models import ApiToken
    from swarm.core.principals import Principal
    from tenancy.models import Tenant
    from workflows.models import Workflow

    identity = _table_identity()
    assert len(identity[1]) >= 5  # workflows, executions, secrets, jobs, tokens, audit entries
    executor = MigrationExecutor(connection)
    executor.migrate([("tenancy", None)])  # back to before the move (workflows 0005, builds 0006, core 0002 too)
    try:
        old = executor.loader.project_state(BEFORE_MOVE).apps
        old_content_type = old.get_model("contenttypes", "ContentType").objects.get(model="tenant")
        assert old_content_type.app_label == "workflows"
        tenant = old.get_model("workflows", "Tenant").objects.create(name="Acme", slug="acme")
        workflow = old.get_model("workflows", "Workflow").objects.create(tenant=tenant, name="Hello", slug="hello")
        queue = old.get_model("builds", "Queue").objects.create(name="migration-test")
        job = old.get_model("builds", "Job").objects.create(tenant=tenant, name="web", scm_url="file:///x",
                                                            scm_url_normalized="file:///x", build_config={},
                                                            queue=queue)
        token = old.get_model("core", "ApiToken").objects.create(scope="engine", tenant=tenant, prefix="abcd1234",
                                                                 digest="0" * 64)
    finally:
        executed = []
        with connection.execute_wrapper(lambda run, sql, params, many, context: (executed.append(sql),
                                                                                 run(sql, params, many, context))[1]):
            executor = MigrationExecutor(connection)
            executor.migrate(THE_MOVE)
        # Then the rest again (later migrations of other apps may well change tables).
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert any("django_content_type" in sql for sql in executed)  # the forward migrations did run
    ddl = [sql for sql in executed if sql.lstrip().upper().startswith(DDL)]
    assert not ddl, ddl
    assert _table_identity() == identity

    moved = Tenant.objects.get(pk=tenant.pk)
    assert (moved.slug, moved.name) == ("acme", "Acme")
    assert Workflow.objects.get(pk=workflow.pk).tenant == moved
    assert Job.objects.get(pk=job.pk).tenant == moved
    assert ApiToken.objects.get(pk=token.pk).tenant == moved
    assert list(moved.workflows.all()) == [Workflow.objects.get(pk=workflow.pk)]
    assert Tenant.objects.visible_to(Principal(scope="engine", tenant_id=moved.pk)).get() == moved
    with pytest.raises(ProtectedError):  # workflows still protect their tenant
        moved.delete()

    content_type = ContentType.objects.get_for_model(Tenant)
    assert (content_type.pk, content_type.app_label) == (old_content_type.pk, "tenancy")
    assert Permission.objects.filter(content_type=content_type, codename="change_tenant").exists()
    assert not ContentType.objects.filter(app_label="workflows", model="tenant").exists()
