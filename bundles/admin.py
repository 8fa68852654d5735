"""Admin for stored bundles: size, hash, which versions use them, a download link. Read-only."""
from django.contrib import admin
from django.db.models import Count
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from bundles.downloads import bundle_download_url
from bundles.models import Bundle, PendingBlob
from tenancy.admin import TenantScopedAdmin


@admin.register(Bundle)
class BundleAdmin(TenantScopedAdmin):
    list_display = ["sha256", "human_size", "member_count", "created_at", "version_count", "download"]
    search_fields = ["sha256"]
    fields = ["sha256", "human_size", "member_count", "human_unpacked_size", "created_at", "used_by", "download"]
    readonly_fields = fields

    class Media:
        css = {"all": ["swarm/admin.css"]}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(version_total=Count("versions"))

    @admin.display(description="versions", ordering="version_total")
    def version_count(self, bundle: Bundle) -> int:
        return bundle.version_total

    @admin.display(description="size", ordering="size")
    def human_size(self, bundle: Bundle) -> str:
        short = filesizeformat(bundle.size)
        return short if bundle.size < 1024 else f"{short} ({bundle.size} bytes)"

    @admin.display(description="unpacked size")
    def human_unpacked_size(self, bundle: Bundle) -> str:
        return filesizeformat(bundle.unpacked_size)

    @admin.display(description="used by")
    def used_by(self, bundle: Bundle) -> str:
        versions = bundle.versions.select_related("workflow__tenant").order_by("workflow__tenant__slug", "workflow__slug")
        if not versions:
            return "— (unreferenced: the orphan sweep removes it after the grace period)"
        return format_html_join(
            ", ", '<a href="{}">{} {}</a>',
            ((reverse("admin:workflows_workflow_change", args=[v.workflow_id]), v.workflow, v.version)
             for v in versions),
        )

    @admin.display(description="download")
    def download(self, bundle: Bundle) -> str:
        return format_html('<a href="{}">download .tar.gz</a>', bundle_download_url(bundle))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PendingBlob)
class PendingBlobAdmin(admin.ModelAdmin):
    """Uploads in flight (or left by a crash): the orphan sweep leaves these keys alone until they go stale."""

    list_display = ["key", "started_at"]
    readonly_fields = ["key", "started_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
