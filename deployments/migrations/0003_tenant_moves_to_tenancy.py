"""The tenant foreign keys point at `tenancy.Tenant` (moved from workflows; tenancy 0001).

State only: the columns, their constraints and the table `workflows_tenant` stay.
"""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("deployments", "0002_profile_version_immutable"),
        ("tenancy", "0001_initial"),
    ]
    # workflows 0005 drops workflows.Tenant from the state; nothing may point at it by then.
    run_before = [("workflows", "0005_tenant_moves_to_tenancy")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="catalogimport",
                    name="tenant",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="catalog_imports", to="tenancy.tenant"),
                ),
                migrations.AlterField(
                    model_name="deploymentprofile",
                    name="tenant",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT,
                                            related_name="deployment_profiles", to="tenancy.tenant"),
                ),
            ],
            database_operations=[],
        ),
    ]
