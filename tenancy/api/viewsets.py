"""Tenancy API: `GET/POST /api/v1/tenants`, and the base of every resource nested under a tenant.

A tenant's own resources are nested under it by the apps that own them
(`/tenants/<slug>/workflows` in workflows.api, `/tenants/<slug>/jobs` in
builds.api), each a `TenantNestedViewSet` registered on `TENANT_PREFIX`:
tenancy knows no app above it.
"""
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from swarm.core.api import error_responses
from swarm.core.choices import TokenScope
from swarm.core.viewsets import SLUG_PATTERN, TenantScopedViewSet
from tenancy import services
from tenancy.api.serializers import TenantSerializer
from tenancy.models import Tenant
from tenancy.selectors import tenant_get

#: The route prefix of a tenant's nested resources: `router.register(rf"{TENANT_PREFIX}/jobs", ...)`.
TENANT_PREFIX = rf"tenants/(?P<slug>{SLUG_PATTERN})"


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


class TenantNestedViewSet(TenantScopedViewSet):
    """A tenant's resources under `/tenants/<slug>/…`: scoped like any other, and only the URL's tenant's.

    The model reaches its tenant through a `tenant` foreign key. A list of a
    tenant the caller does not see is a 404 (`No tenant 'x'.`), as is any
    object of it.
    """

    def get_queryset(self):
        return super().get_queryset().filter(tenant__slug=self.kwargs["slug"])

    def url_tenant(self) -> Tenant:
        """The tenant the URL names, if the caller sees it; else a 404."""
        return tenant_get(self.principal, self.kwargs["slug"])

    def list(self, request, slug: str):
        """`GET /tenants/<slug>/…`: one page of the tenant's rows."""
        self.url_tenant()
        return self.list_page()
