"""Tenants: creating one and renaming it (its slug is fixed once created: it is in every API path and token)."""
from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from swarm.core.errors import ApiError, Conflict
from swarm.core.principals import Principal
from swarm.core.services import audit_record
from tenancy.models import Tenant


def tenant_create(*, name: str, slug: str = "", actor: Principal | str = "system") -> Tenant:
    """Create a tenant; a slug already taken is a 409."""
    slug = slug or slugify(name)
    if not slug:
        raise ApiError("A tenant needs a slug.", code="invalid", field="slug")
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(name=name or slug, slug=slug)
    except IntegrityError:
        raise Conflict(f"Tenant {slug!r} already exists.", code="tenant_exists", field="slug") from None
    audit_record(actor=actor, action="tenant.create", obj=tenant, tenant_id=tenant.pk)
    return tenant


def tenant_update(*, tenant: Tenant, name: str, actor: Principal | str = "system") -> Tenant:
    """Rename a tenant (the display name only; the slug never changes). The same name again changes nothing."""
    name = (name or "").strip()
    if not name:
        raise ApiError("A tenant needs a name.", code="invalid", field="name")
    previous = tenant.name
    if name == previous:
        return tenant
    tenant.name = name
    tenant.save(update_fields=["name"])
    audit_record(actor=actor, action="tenant.update", obj=tenant, tenant_id=tenant.pk,
                 detail={"name": name, "previous_name": previous})
    return tenant


def tenant_set_quotas(*, tenant: Tenant, quotas: dict, actor: Principal | str = "system") -> Tenant:
    """Set a tenant's quota overrides (`{"bundles": 50, "builds_queued": None, ...}`; None: the setting's default)."""
    from tenancy.quotas import QUOTAS

    known = {quota.name: quota for quota in QUOTAS}
    changes = {}
    for name, value in quotas.items():
        if name not in known:
            raise ApiError(f"Unknown quota {name!r}; quotas are {', '.join(sorted(known))}.", code="invalid",
                           field=name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ApiError(f"The {name} quota must be a whole number ≥ 0 (0 = unlimited) or empty.", code="invalid",
                           field=name)
        if getattr(tenant, known[name].field) != value:
            changes[known[name].field] = value
    if not changes:
        return tenant
    for field, value in changes.items():
        setattr(tenant, field, value)
    tenant.save(update_fields=list(changes))
    audit_record(actor=actor, action="tenant.quotas", obj=tenant, tenant_id=tenant.pk, detail=changes)
    return tenant
