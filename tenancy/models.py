"""The tenant: an isolated customer of the platform; objects of other tenants are invisible."""
from django.db import models

from tenancy.scope import SELF, TenantScopedQuerySet


class Tenant(models.Model):
    """An isolated customer of the platform. Objects of other tenants are invisible (tenancy.scope)."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Per-tenant quota overrides (tenancy.quotas); empty: the SWARM_QUOTA_* setting applies.
    quota_bundles = models.PositiveIntegerField(
        null=True, blank=True, help_text="Workflow versions (bundles) stored; empty: SWARM_QUOTA_BUNDLES.")
    quota_bundle_bytes = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Bytes of distinct bundles stored; empty: SWARM_QUOTA_BUNDLE_BYTES.")
    quota_executions_running = models.PositiveIntegerField(
        null=True, blank=True, help_text="Executions not yet finished; empty: SWARM_QUOTA_EXECUTIONS_RUNNING.")
    quota_builds_queued = models.PositiveIntegerField(
        null=True, blank=True, help_text="Builds waiting for a drone; empty: SWARM_QUOTA_BUILDS_QUEUED.")

    tenant_path = SELF
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        # The table predates this app (it was workflows.Tenant): kept, so no foreign key or row moves.
        db_table = "workflows_tenant"

    def __str__(self) -> str:
        return self.slug
