"""Operator UI for the registry: tenants, workflows with version history, activate and roll back."""
from django.contrib import admin, messages
from django.utils.html import format_html

from bundles.downloads import bundle_download_url
from swarm.core.errors import ApiError
from swarm.core.principals import principal_for_user
from workflows import services
from workflows.models import Tenant, Workflow, WorkflowActivation, WorkflowVersion


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}


class WorkflowVersionInline(admin.TabularInline):
    model = WorkflowVersion
    extra = 0
    can_delete = False
    fields = ["version", "is_active", "bundle_hash", "bundle_size", "download", "deployed_by", "created_at",
              "activated_at"]
    readonly_fields = fields
    ordering = ["-created_at"]
    show_change_link = True

    @admin.display(description="bundle sha256")
    def bundle_hash(self, version: WorkflowVersion) -> str:
        return version.bundle.sha256

    @admin.display(description="size (bytes)")
    def bundle_size(self, version: WorkflowVersion) -> int:
        return version.bundle.size

    @admin.display(description="bundle")
    def download(self, version: WorkflowVersion) -> str:
        return format_html('<a href="{}">download</a>', bundle_download_url(version.bundle))

    def has_add_permission(self, request, obj=None):
        return False


class WorkflowActivationInline(admin.TabularInline):
    model = WorkflowActivation
    fk_name = "workflow"
    extra = 0
    can_delete = False
    fields = ["activated_at", "reason", "version", "previous_version", "activated_by"]
    readonly_fields = fields
    verbose_name_plural = "activation history"

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["__str__", "name", "runtime", "active_version", "memory_mb", "timeout_sec"]
    list_filter = ["tenant", "runtime"]
    search_fields = ["slug", "name", "tenant__slug"]
    inlines = [WorkflowVersionInline, WorkflowActivationInline]
    actions = ["rollback_workflows"]

    @admin.display(description="active version")
    def active_version(self, workflow: Workflow) -> str:
        active = workflow.versions.filter(is_active=True).first()
        return active.version if active else "—"

    @admin.action(description="Roll back to the previously active version", permissions=["change"])
    def rollback_workflows(self, request, queryset):
        actor = principal_for_user(request.user)
        for workflow in queryset:
            try:
                version = services.workflow_rollback(workflow=workflow, actor=actor)
            except ApiError as error:
                self.message_user(request, f"{workflow}: {error.detail}", messages.ERROR)
                continue
            self.log_change(request, workflow, f"Rolled back to {version.version}")
            self.message_user(request, f"{workflow}: rolled back to {version.version}.")


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    list_display = ["workflow", "version", "is_active", "bundle_short", "bundle_size", "deployed_by", "created_at"]
    list_filter = ["is_active", "workflow__tenant", "workflow"]
    search_fields = ["version", "workflow__slug", "bundle__sha256"]
    readonly_fields = ["workflow", "version", "bundle", "bundle_hash", "bundle_size", "download", "metadata",
                       "deployed_by", "created_at", "is_active", "activated_at"]
    fields = readonly_fields
    actions = ["activate_versions"]

    @admin.display(description="bundle")
    def bundle_short(self, version: WorkflowVersion) -> str:
        return version.bundle.sha256[:12]

    @admin.display(description="bundle sha256")
    def bundle_hash(self, version: WorkflowVersion) -> str:
        return version.bundle.sha256

    @admin.display(description="size (bytes)")
    def bundle_size(self, version: WorkflowVersion) -> int:
        return version.bundle.size

    @admin.display(description="download")
    def download(self, version: WorkflowVersion) -> str:
        return format_html('<a href="{}">download .tar.gz</a>', bundle_download_url(version.bundle))

    def has_add_permission(self, request):
        return False

    @admin.action(description="Activate selected version", permissions=["change"])
    def activate_versions(self, request, queryset):
        actor = principal_for_user(request.user)
        for version in queryset.select_related("workflow"):
            services.workflow_version_activate(workflow=version.workflow, version=version, actor=actor)
            self.log_change(request, version, "Activated")
            self.message_user(request, f"{version.workflow}: {version.version} is now active.")

# Executions and tenant secrets (issue 3) register their admin here.
from workflows import execution_admin  # noqa: E402,F401
