"""Serializers of the bundle API."""
from rest_framework import serializers

from bundles.downloads import bundle_download_url
from bundles.models import Bundle


class BundleSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="Short-lived download URL.")

    class Meta:
        model = Bundle
        fields = ["sha256", "size", "member_count", "unpacked_size", "created_at", "url"]

    def get_url(self, bundle: Bundle) -> str:
        return bundle_download_url(bundle)


class BundleUploadFormSerializer(serializers.Serializer):
    """The multipart form of `POST /api/v1/bundles` (documentation only; parsing streams)."""

    bundle = serializers.FileField(help_text="The .tar.gz bundle.")
    tenant = serializers.SlugField()
    workflow = serializers.SlugField()
    version = serializers.CharField(help_text="Semantic version, e.g. 1.2.0.")
    metadata = serializers.CharField(required=False, help_text="JSON object.")
    sha256 = serializers.CharField(required=False, help_text="Expected sha256; a mismatch is refused.")
    activate = serializers.BooleanField(required=False)
    runtime = serializers.CharField(required=False, help_text="Runtime of a workflow created by this push.")
    entrypoint = serializers.CharField(required=False, help_text="Entrypoint of a workflow created by this push.")
