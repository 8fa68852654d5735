"""Operator UI for tenants (create and rename through the services), and the tenant scope for every admin page.

* `TenantScopedAdmin` — the admin's changelists and change pages of
  tenant-owned models go through the same `visible_to()` as the API
  (tenancy.scope), for the principal of the logged-in user. Staff users act
  with admin scope, so today they see every tenant; the rule is applied in
  one place all the same.
* `TenantAdmin` — the tenant list and page. Apps above tenancy add their own
  rows to a tenant's page with `register_tenant_inline` (the workflows app
  shows the tenant's workflows), so this module imports none of them.

Both saves go through `tenancy.services` (`tenant_create`, `tenant_update`),
the functions the API calls, so they are validated and audited the same way.
"""
from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import Count

from swarm.core.principals import principal_for_user
from swarm.core.service_admin import ServiceModelAdmin, adopt_saved
from tenancy import services
from tenancy.models import Tenant
from tenancy.quotas import QUOTAS

#: Inlines other apps show on a tenant's admin page (`register_tenant_inline`).
TENANT_PAGE_INLINES: list[type[InlineModelAdmin]] = []


def register_tenant_inline(inline: type[InlineModelAdmin]) -> type[InlineModelAdmin]:
    """Show `inline` (rows of a model with a `tenant` foreign key) on every tenant's admin page; a decorator."""
    TENANT_PAGE_INLINES.append(inline)
    return inline


class TenantScopedAdmin(admin.ModelAdmin):
    """A ModelAdmin of a tenant-owned model: its queryset is `visible_to()` the logged-in user's principal."""

    def get_queryset(self, request):
        return super().get_queryset(request).visible_to(principal_for_user(request.user))


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin, ServiceModelAdmin):
    list_display = ["slug", "name", "workflow_count", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}

    def get_fieldsets(self, request, obj=None):
        return [(None, {"fields": ["name", "slug", "created_at"] if obj else ["name", "slug"]}),
                ("Quotas (empty: the SWARM_QUOTA_* default; 0: unlimited)",
                 {"fields": [quota.field for quota in QUOTAS]})]

    class Media:
        css = {"all": ["swarm/admin.css"]}

    def get_inlines(self, request, obj):
        return [*super().get_inlines(request, obj), *TENANT_PAGE_INLINES]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(workflow_total=Count("workflows"))

    @admin.display(description="workflows", ordering="workflow_total")
    def workflow_count(self, tenant: Tenant) -> int:
        return tenant.workflow_total

    def get_readonly_fields(self, request, obj=None):
        # A tenant's slug is in every API path and token binding: fixed once created.
        return ["slug", "created_at"] if obj else []

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj else self.prepopulated_fields

    def save_model(self, request, obj, form, change):
        # The same services as `POST /api/v1/tenants` (validation, audit log); the slug is fixed once created.
        actor = principal_for_user(request.user)
        if change:
            saved = services.tenant_update(tenant=Tenant.objects.get(pk=obj.pk), name=obj.name, actor=actor)
        else:
            saved = services.tenant_create(name=obj.name, slug=obj.slug, actor=actor)
        saved = services.tenant_set_quotas(
            tenant=saved, quotas={quota.name: getattr(obj, quota.field) for quota in QUOTAS}, actor=actor)
        adopt_saved(obj, saved)
