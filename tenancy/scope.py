"""The tenant scope: one queryset method says which rows of a tenant-owned model a caller may see.

Every model that belongs to a tenant declares how it reaches its tenant, as a
lookup path ending at `tenancy.Tenant`, and uses `TenantScopedQuerySet`
(directly or through a subclass with its own methods):

    class Build(models.Model):
        tenant_path = "job__tenant"
        objects = BuildQuerySet.as_manager()      # BuildQuerySet(TenantScopedQuerySet)

    Build.objects.visible_to(principal)

The rule, for every model alike:

* no principal (an anonymous caller, a non-staff session): nothing;
* an unbound principal (admin, an engine or read token without a tenant,
  beat and tasks): everything, including rows that belong to no tenant
  (jobs with a null tenant);
* a tenant-bound principal: the rows whose path leads to its tenant. A row
  that leads to no tenant (a job with a null tenant) is not among them.

`Principal.sees_tenant(tenant_id)` is the same rule for one object already in
memory (the services' check before a write).

A multi-valued path (`versions__workflow__tenant`: a bundle is visible to
every tenant one of whose versions uses it) is filtered with `EXISTS`, so a
row shared by several versions is still one row and no `DISTINCT` is needed.

API viewsets apply the scope once, in `get_queryset()`
(`swarm.core.viewsets.TenantScopedViewSet`); selectors and the admin
(`tenancy.admin.TenantScopedAdmin`) call the same method.
"""
from __future__ import annotations

from functools import cache

from django.db import models
from django.db.models import Exists, OuterRef

#: The path of `Tenant` itself: a tenant is visible to the principal bound to it.
SELF = "pk"


def tenant_path(model: type[models.Model]) -> str:
    """The lookup path from `model` to its tenant (`tenant`, `workflow__tenant`, `pk` for Tenant)."""
    path = getattr(model, "tenant_path", None)
    if not path:
        raise TypeError(f"{model._meta.label} uses TenantScopedQuerySet but declares no tenant_path")
    return path


@cache
def path_is_multi_valued(model: type[models.Model], path: str) -> bool:
    """Whether `path` crosses a one-to-many or many-to-many relation (one row, several tenants)."""
    opts = model._meta
    for name in path.split("__"):
        if name == SELF:
            return False
        field = opts.get_field(name)
        if field.one_to_many or field.many_to_many:
            return True
        if not field.is_relation:
            return False
        opts = field.related_model._meta
    return False


class TenantScopedQuerySet(models.QuerySet):
    """A queryset of a tenant-owned model; `visible_to(principal)` is the only tenant filter there is."""

    def visible_to(self, principal):
        """The rows `principal` may see (see the module docstring for the rule)."""
        if principal is None:
            return self.none()
        if not principal.is_tenant_bound:
            return self
        path = tenant_path(self.model)
        lookup = {path: principal.tenant_id}
        if path_is_multi_valued(self.model, path):
            owned = self.model._base_manager.filter(pk=OuterRef("pk"), **lookup)
            return self.filter(Exists(owned))
        return self.filter(**lookup)
