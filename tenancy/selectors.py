"""Reads of tenants, scoped to the caller (another tenant is a 404)."""
from django.db.models import QuerySet

from swarm.core.errors import NotFound
from swarm.core.principals import Principal
from tenancy.models import Tenant


def tenant_list(principal: Principal | None) -> QuerySet[Tenant]:
    """Tenants the principal may see: all, or only its own when tenant-bound."""
    return Tenant.objects.visible_to(principal)


def tenant_get(principal: Principal | None, slug: str) -> Tenant:
    """A visible tenant by slug; another tenant's is a 404."""
    tenant = tenant_list(principal).filter(slug=slug).first()
    if tenant is None:
        raise NotFound(f"No tenant {slug!r}.", field="tenant")
    return tenant
