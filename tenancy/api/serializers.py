"""Serializers of the tenancy API."""
from rest_framework import serializers

from swarm.core.serializers import RejectUnknownFields
from tenancy.models import Tenant


class TenantSerializer(RejectUnknownFields, serializers.ModelSerializer):
    """A tenant (written by `POST /tenants`: `name` and `slug`)."""

    # Declared so that a taken slug reaches `tenant_create` and is a 409 `tenant_exists`, not a 400.
    slug = serializers.SlugField(max_length=64)

    class Meta:
        model = Tenant
        fields = ["id", "name", "slug", "created_at"]
