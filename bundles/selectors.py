"""Reads of the bundle store, scoped to the caller."""
from django.db.models import QuerySet

from bundles.models import Bundle
from swarm.core.errors import NotFound
from swarm.core.principals import Principal


def bundle_queryset(principal: Principal) -> QuerySet[Bundle]:
    """Bundles the principal may see: all, or those its tenant's versions use."""
    queryset = Bundle.objects.all()
    if principal.is_tenant_bound:
        queryset = queryset.filter(versions__workflow__tenant_id=principal.tenant_id).distinct()
    return queryset


def bundle_get(principal: Principal, sha256: str) -> Bundle:
    """One visible bundle by digest, else a 404."""
    bundle = bundle_queryset(principal).filter(sha256=sha256.lower()).first()
    if bundle is None:
        raise NotFound(f"No bundle with sha256 {sha256}.")
    return bundle
