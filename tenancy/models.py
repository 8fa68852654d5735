"""The tenant: an isolated customer of the platform; objects of other tenants are invisible."""
from django.db import models

from tenancy.scope import SELF, TenantScopedQuerySet


class Tenant(models.Model):
    """An isolated customer of the platform. Objects of other tenants are invisible (tenancy.scope)."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = SELF
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        # The table predates this app (it was workflows.Tenant): kept, so no foreign key or row moves.
        db_table = "workflows_tenant"

    def __str__(self) -> str:
        return self.slug
