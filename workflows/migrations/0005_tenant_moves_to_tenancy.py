"""`Tenant` now lives in the tenancy app (tenancy 0001): point the foreign keys there and drop it from this app.

State only: the table `workflows_tenant` and every foreign key constraint on
it stay exactly as they are. Runs after the other apps moved their own
foreign keys to `tenancy.Tenant` (builds 0006 and core 0002 declare
`run_before` this migration), so no state ever points at a model that is gone.
"""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("tenancy", "0001_initial"),
        ("workflows", "0004_tenant_secret_encrypted_column"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="workflow",
                    name="tenant",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="workflows",
                                            to="tenancy.tenant"),
                ),
                migrations.AlterField(
                    model_name="execution",
                    name="tenant",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="executions",
                                            to="tenancy.tenant"),
                ),
                migrations.AlterField(
                    model_name="tenantsecret",
                    name="tenant",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="secrets",
                                            to="tenancy.tenant"),
                ),
                migrations.DeleteModel(name="Tenant"),
            ],
            database_operations=[],
        ),
    ]
