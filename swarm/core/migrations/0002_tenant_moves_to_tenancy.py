"""Tokens' and audit entries' tenant foreign keys point at `tenancy.Tenant` (moved from workflows; tenancy 0001).

State only: the columns, their constraints and the table `workflows_tenant` stay.
"""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0001_initial"),
        ("tenancy", "0001_initial"),
    ]
    # workflows 0005 drops workflows.Tenant from the state; nothing may point at it by then.
    run_before = [("workflows", "0005_tenant_moves_to_tenancy")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="apitoken",
                    name="tenant",
                    field=models.ForeignKey(blank=True, null=True,
                                            help_text="When set, the token only sees this tenant's objects.",
                                            on_delete=django.db.models.deletion.CASCADE, related_name="api_tokens",
                                            to="tenancy.tenant"),
                ),
                migrations.AlterField(
                    model_name="auditlogentry",
                    name="tenant",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                            to="tenancy.tenant"),
                ),
            ],
            database_operations=[],
        ),
    ]
