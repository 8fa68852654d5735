"""Operator UI for the registry: workflows with their version and activation history, activate and roll back.

Every state change here goes through `workflows.services`, the same functions
the API calls, and is recorded in the admin log with `log_change`. The
per-row "Activate" buttons and the "Roll back" button POST (with the CSRF
token) to custom admin views registered in `WorkflowAdmin.get_urls()`.
"""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from swarm.core.admin_display import json_display
from swarm.core.errors import ApiError
from swarm.core.principals import principal_for_user
from swarm.core.service_admin import ServiceModelAdmin, adopt_saved, form_changes
from tenancy.admin import TenantScopedAdmin, register_tenant_inline
from workflows import services
from workflows.admin.display import (
    SwarmAdminMedia,
    active_badge,
    activate_button,
    bundle_hash_cell,
    download_link,
    exact_size,
)
from workflows.admin.executions import spawn_executions
from workflows.models import Workflow, WorkflowActivation, WorkflowVersion


class WorkflowVersionInline(admin.TabularInline):
    """The version history on a workflow's page, newest first, each inactive one with an Activate button."""

    model = WorkflowVersion
    extra = 0
    can_delete = False
    fields = ["version", "active", "bundle_hash", "bundle_size", "download", "deployed_by", "created_at",
              "activated_at", "activate_button"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    show_change_link = True
    verbose_name_plural = "version history"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("bundle")

    @admin.display(description="active")
    def active(self, version: WorkflowVersion) -> str:
        return active_badge(version.is_active)

    @admin.display(description="bundle sha256")
    def bundle_hash(self, version: WorkflowVersion) -> str:
        return bundle_hash_cell(version.bundle.sha256)

    @admin.display(description="size")
    def bundle_size(self, version: WorkflowVersion) -> str:
        return filesizeformat(version.bundle.size)

    @admin.display(description="bundle")
    def download(self, version: WorkflowVersion) -> str:
        return download_link(version)

    @admin.display(description="")
    def activate_button(self, version: WorkflowVersion) -> str:
        return activate_button(version)

    def has_add_permission(self, request, obj=None):
        return False


class WorkflowActivationInline(admin.TabularInline):
    """Every activation and rollback of the workflow, newest first."""

    model = WorkflowActivation
    fk_name = "workflow"
    extra = 0
    can_delete = False
    fields = ["activated_at", "reason", "version_label", "previous_label", "activated_by"]
    readonly_fields = fields
    verbose_name_plural = "activation history"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("version", "previous_version")

    @admin.display(description="version")
    def version_label(self, activation: WorkflowActivation) -> str:
        return activation.version.version

    @admin.display(description="replaced")
    def previous_label(self, activation: WorkflowActivation) -> str:
        return activation.previous_version.version if activation.previous_version else "—"

    def has_add_permission(self, request, obj=None):
        return False


@register_tenant_inline
class TenantWorkflowInline(admin.TabularInline):
    """A tenant's workflows on its page (tenancy.admin), read-only, linking to each workflow's page."""

    model = Workflow
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["slug", "name", "runtime", "entrypoint", "memory_mb", "timeout_sec"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workflow)
class WorkflowAdmin(TenantScopedAdmin, ServiceModelAdmin):
    Media = SwarmAdminMedia
    list_display = ["__str__", "name", "runtime", "active_version", "version_count", "memory_mb", "timeout_sec"]
    list_filter = ["tenant", "runtime"]
    search_fields = ["slug", "name", "tenant__slug"]
    list_select_related = ["tenant"]
    readonly_fields = ["active_version", "created_at"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "slug", "description", "active_version"]}),
        ("Runtime", {"fields": ["runtime", "entrypoint", "memory_mb", "timeout_sec", "cpus", "execution_runtime",
                                 "drone_labels"]}),
        (None, {"fields": ["created_at"]}),
    ]
    inlines = [WorkflowVersionInline, WorkflowActivationInline]
    actions = ["rollback_workflows", spawn_executions]

    def get_queryset(self, request):
        active_label = WorkflowVersion.objects.filter(workflow=OuterRef("pk"), is_active=True).values("version")[:1]
        return super().get_queryset(request).annotate(
            active_version_label=Subquery(active_label), version_total=Count("versions"),
        )

    def get_readonly_fields(self, request, obj=None):
        # Versions belong to one tenant's workflow: moving it would move them.
        return [*self.readonly_fields, "tenant", "slug"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        # The same services as the API (validation, audit log); tenant and slug are fixed once created.
        if change:
            saved = services.workflow_update(
                principal=self._actor(request), workflow=Workflow.objects.select_related("tenant").get(pk=obj.pk),
                **form_changes(form, services.WORKFLOW_EDITABLE_FIELDS),
            )
        else:
            saved = services.workflow_create(
                principal=self._actor(request), tenant=obj.tenant, slug=obj.slug, name=obj.name,
                description=obj.description, runtime=obj.runtime, entrypoint=obj.entrypoint,
                memory_mb=obj.memory_mb, timeout_sec=obj.timeout_sec,
            )
        adopt_saved(obj, saved)

    @admin.display(description="active version")
    def active_version(self, workflow: Workflow) -> str:
        label = getattr(workflow, "active_version_label", None)
        if label is None and workflow.pk and not hasattr(workflow, "active_version_label"):
            active = workflow.versions.filter(is_active=True).first()
            label = active.version if active else None
        return format_html('<strong class="swarm-active-version">{}</strong>', label) if label else "—"

    @admin.display(description="versions", ordering="version_total")
    def version_count(self, workflow: Workflow) -> int:
        return workflow.version_total

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/versions/<int:version_id>/activate/", wrap(self.activate_view),
                 name="workflows_workflow_activate"),
            path("<path:object_id>/rollback/", wrap(self.rollback_view), name="workflows_workflow_rollback"),
            *super().get_urls(),
        ]

    def _workflow_for_change(self, request, object_id) -> Workflow:
        workflow = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, workflow):
            raise PermissionDenied
        return workflow

    def _change_page(self, workflow: Workflow) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[workflow.pk]))

    @staticmethod
    def _actor(request):
        return principal_for_user(request.user)

    def activate_view(self, request, object_id, version_id):
        """POST: activate one version of this workflow (`services.workflow_version_activate`)."""
        return require_POST(self._activate)(request, object_id, version_id)

    def _activate(self, request, object_id, version_id):
        workflow = self._workflow_for_change(request, object_id)
        version = get_object_or_404(WorkflowVersion, pk=version_id, workflow=workflow)
        try:
            services.workflow_version_activate(workflow=workflow, version=version, actor=self._actor(request))
        except ApiError as error:
            self.message_user(request, f"{workflow}: {error.detail}", messages.ERROR)
            return self._change_page(workflow)
        self.log_change(request, workflow, f"Activated version {version.version}.")
        self.message_user(request, f"{workflow}: version {version.version} is now active.", messages.SUCCESS)
        return self._change_page(workflow)

    def rollback_view(self, request, object_id):
        """POST: re-activate the previously active version (`services.workflow_rollback`)."""
        return require_POST(self._rollback)(request, object_id)

    def _rollback(self, request, object_id):
        workflow = self._workflow_for_change(request, object_id)
        self._rollback_one(request, workflow)
        return self._change_page(workflow)

    def _rollback_one(self, request, workflow: Workflow) -> None:
        try:
            version = services.workflow_rollback(workflow=workflow, actor=self._actor(request))
        except ApiError as error:
            self.message_user(request, f"{workflow}: {error.detail}", messages.ERROR)
            return
        self.log_change(request, workflow, f"Rolled back to version {version.version}.")
        self.message_user(request, f"{workflow}: rolled back to version {version.version}.", messages.SUCCESS)

    @admin.action(description="Roll back selected workflows to their previously active version",
                  permissions=["change"])
    def rollback_workflows(self, request, queryset):
        for workflow in queryset:
            self._rollback_one(request, workflow)


class WorkflowFilter(admin.SimpleListFilter):
    """Filter versions by workflow, labelled `tenant/workflow` with one query (not one per workflow)."""

    title = "workflow"
    parameter_name = "workflow"

    def lookups(self, request, model_admin):
        workflows = Workflow.objects.visible_to(principal_for_user(request.user)).select_related("tenant")
        return [(str(workflow.pk), str(workflow)) for workflow in workflows]

    def queryset(self, request, queryset):
        return queryset.filter(workflow_id=self.value()) if self.value() else queryset


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(TenantScopedAdmin):
    """Versions are immutable: viewable, activatable, never edited or deleted here."""

    Media = SwarmAdminMedia

    list_display = ["workflow", "version", "active", "bundle_short", "bundle_size", "deployed_by", "created_at",
                    "activated_at"]
    list_filter = ["is_active", "workflow__tenant", WorkflowFilter]
    list_select_related = ["workflow__tenant", "bundle"]
    search_fields = ["version", "workflow__slug", "bundle__sha256"]
    readonly_fields = ["workflow", "version", "active", "activate", "bundle", "bundle_hash", "bundle_size",
                       "download", "metadata_table", "deployed_by", "created_at", "activated_at"]
    fields = readonly_fields
    actions = ["activate_versions"]

    @admin.display(description="metadata")
    def metadata_table(self, version: WorkflowVersion):
        return json_display(version.metadata)

    @admin.display(description="active", ordering="is_active")
    def active(self, version: WorkflowVersion) -> str:
        return active_badge(version.is_active)

    @admin.display(description="activation")
    def activate(self, version: WorkflowVersion) -> str:
        return activate_button(version) or "This is the active version."

    @admin.display(description="bundle")
    def bundle_short(self, version: WorkflowVersion) -> str:
        return bundle_hash_cell(version.bundle.sha256)

    @admin.display(description="bundle sha256")
    def bundle_hash(self, version: WorkflowVersion) -> str:
        return format_html("<code>{}</code>", version.bundle.sha256)

    @admin.display(description="size", ordering="bundle__size")
    def bundle_size(self, version: WorkflowVersion) -> str:
        return exact_size(version.bundle.size)

    @admin.display(description="download")
    def download(self, version: WorkflowVersion) -> str:
        return download_link(version)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_activate_permission(self, request) -> bool:
        """Activating a version changes its workflow: the workflow change permission decides."""
        return request.user.has_perm("workflows.change_workflow")

    @admin.action(description="Activate selected versions", permissions=["activate"])
    def activate_versions(self, request, queryset):
        chosen = list(queryset.select_related("workflow__tenant"))
        per_workflow: dict[int, list[WorkflowVersion]] = {}
        for version in chosen:
            per_workflow.setdefault(version.workflow_id, []).append(version)
        actor = principal_for_user(request.user)
        for versions in per_workflow.values():
            workflow = versions[0].workflow
            if len(versions) > 1:
                labels = ", ".join(v.version for v in versions)
                self.message_user(request, f"{workflow}: pick one version to activate, not {labels}.", messages.ERROR)
                continue
            version = versions[0]
            services.workflow_version_activate(workflow=workflow, version=version, actor=actor)
            self.log_change(request, workflow, f"Activated version {version.version}.")
            self.message_user(request, f"{workflow}: version {version.version} is now active.", messages.SUCCESS)
