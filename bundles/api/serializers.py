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

