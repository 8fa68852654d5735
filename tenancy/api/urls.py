"""Tenancy API routes (mounted under /api/v1/)."""
from rest_framework.routers import SimpleRouter

from tenancy.api.viewsets import TenantViewSet

router = SimpleRouter(trailing_slash=False)
router.register("tenants", TenantViewSet, basename="tenant")

urlpatterns = router.urls
