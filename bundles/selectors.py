"""Reads of the bundle store, scoped to the caller (tenancy.scope: a tenant sees the bundles its versions use)."""
from django.db.models import QuerySet

from bundles.models import Bundle
from swarm.core.errors import NotFound
from swarm.core.principals import Principal


def bundle_queryset(principal: Principal | None) -> QuerySet[Bundle]:
    """Bundles the principal may see: all, or those its tenant's versions use."""
    return Bundle.objects.visible_to(principal)


def bundle_get(principal: Principal | None, sha256: str) -> Bundle:
    """One visible bundle by digest, else a 404."""
    bundle = bundle_queryset(principal).filter(sha256=sha256.lower()).first()
    if bundle is None:
        raise NotFound(f"No bundle with sha256 {sha256}.")
    return bundle
