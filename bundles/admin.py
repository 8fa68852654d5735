"""Admin for stored bundles: size, hash, who uses them, a download link."""
from django.contrib import admin
from django.utils.html import format_html

from bundles.downloads import bundle_download_url
from bundles.models import Bundle


@admin.register(Bundle)
class BundleAdmin(admin.ModelAdmin):
    list_display = ["sha256", "size", "member_count", "created_at", "version_count", "download"]
    search_fields = ["sha256"]
    readonly_fields = ["sha256", "size", "member_count", "unpacked_size", "created_at", "download"]

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(version_total=Count("versions"))

    @admin.display(description="versions", ordering="version_total")
    def version_count(self, bundle: Bundle) -> int:
        return bundle.version_total

    @admin.display(description="download")
    def download(self, bundle: Bundle) -> str:
        return format_html('<a href="{}">download .tar.gz</a>', bundle_download_url(bundle))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
