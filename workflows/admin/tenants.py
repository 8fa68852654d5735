"""Operator UI for tenants: the list, a tenant's workflows (read-only), create and rename.

Both saves go through `workflows.services` (`tenant_create`, `tenant_update`),
the functions the API calls, so they are validated and audited the same way.
"""
from __future__ import annotations

from django.contrib import admin
from django.db.models import Count

from swarm.core.principals import principal_for_user
from swarm.core.service_admin import ServiceModelAdmin, adopt_saved
from workflows import services
from workflows.admin.display import SwarmAdminMedia
from workflows.models import Tenant, Workflow


class WorkflowInline(admin.TabularInline):
    """A tenant's workflows, read-only, linking to each workflow's page."""

    model = Workflow
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["slug", "name", "runtime", "entrypoint", "memory_mb", "timeout_sec"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Tenant)
class TenantAdmin(ServiceModelAdmin):
    Media = SwarmAdminMedia
    list_display = ["slug", "name", "workflow_count", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [WorkflowInline]

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
        adopt_saved(obj, saved)
