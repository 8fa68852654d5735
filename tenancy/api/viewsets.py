"""Tenancy API: `GET/POST /api/v1/tenants`.

A tenant's own resources are nested under it by the apps that own them
(`/tenants/<slug>/workflows` in workflows.api, `/tenants/<slug>/jobs` in
builds.api): tenancy knows no app above it.
"""
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from swarm.core.api import error_responses
from swarm.core.choices import TokenScope
from swarm.core.viewsets import SLUG_PATTERN, TenantScopedViewSet
from tenancy import services
from tenancy.api.serializers import TenantSerializer
from tenancy.models import Tenant


class TenantViewSet(TenantScopedViewSet):
    """Tenants visible to the caller (a bound token sees its own); admins create new ones."""

    queryset = Tenant.objects.all()
    serializer_class = TenantSerializer
    lookup_field = "slug"
    lookup_value_regex = SLUG_PATTERN
    write_scopes = frozenset({TokenScope.ADMIN})

    @extend_schema(responses={200: TenantSerializer(many=True), **error_responses(400)}, summary="List tenants")
    def list(self, request):
        """`GET /api/v1/tenants`: the tenants the caller sees."""
        return self.list_page()

    @extend_schema(request=TenantSerializer, responses={201: TenantSerializer, **error_responses(400, 409)},
                   summary="Create a tenant (admin scope)")
    def create(self, request):
        """`POST /api/v1/tenants` (admin scope)."""
        serializer = TenantSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = services.tenant_create(name=serializer.validated_data["name"],
                                        slug=serializer.validated_data["slug"], actor=self.principal)
        return Response(TenantSerializer(tenant).data, status=201)
