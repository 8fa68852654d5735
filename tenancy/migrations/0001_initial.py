"""`Tenant` moves from the workflows app to tenancy: the state moves, the table `workflows_tenant` stays.

No table is created, renamed or rewritten and no foreign key is touched: the
model keeps `db_table = "workflows_tenant"`. The foreign keys of the other
apps follow in their own state-only migrations (workflows 0005, builds 0006,
core 0002), and workflows 0005 then drops `workflows.Tenant` from the state.

The content type `workflows.tenant` becomes `tenancy.tenant` (same row, same
id), so the admin's history of tenants and the permissions given on them
stay where they were.
"""
from django.db import migrations, models


def move_content_type(apps, schema_editor, *, source: str, target: str) -> None:
    """Relabel the content type of tenants from `source` to `target`, unless `target` already has one."""
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(schema_editor.connection.alias)
    if not content_types.filter(app_label=target, model="tenant").exists():
        content_types.filter(app_label=source, model="tenant").update(app_label=target)


def forwards(apps, schema_editor):
    move_content_type(apps, schema_editor, source="workflows", target="tenancy")


def backwards(apps, schema_editor):
    move_content_type(apps, schema_editor, source="tenancy", target="workflows")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("workflows", "0004_tenant_secret_encrypted_column"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Tenant",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                                   verbose_name="ID")),
                        ("name", models.CharField(max_length=200)),
                        ("slug", models.SlugField(max_length=64, unique=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={"ordering": ["slug"], "db_table": "workflows_tenant"},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
