"""Jobs' tenant foreign key points at `tenancy.Tenant` (moved from workflows; tenancy 0001).

State only: the column, its constraint and the table `workflows_tenant` stay.
"""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("builds", "0005_encrypt_job_webhook_secret"),
        ("tenancy", "0001_initial"),
    ]
    # workflows 0005 drops workflows.Tenant from the state; nothing may point at it by then.
    run_before = [("workflows", "0005_tenant_moves_to_tenancy")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="job",
                    name="tenant",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="build_jobs", to="tenancy.tenant"),
                ),
            ],
            database_operations=[],
        ),
    ]
