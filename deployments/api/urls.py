"""Routes of the deployment manager's API under /api/v1/ (docs/deployments.md)."""
from django.urls import path
from rest_framework.routers import SimpleRouter

from deployments.api import viewsets
from deployments.manifest import SCHEMA_NAME

router = SimpleRouter(trailing_slash=False)
router.register("catalogs", viewsets.CatalogViewSet, basename="catalog")
router.register("catalog-fetches", viewsets.CatalogFetchViewSet, basename="catalog-fetch")
router.register("scenarios", viewsets.ScenarioViewSet, basename="scenario")
router.register("profiles", viewsets.ProfileViewSet, basename="profile")
router.register("packages", viewsets.PackageViewSet, basename="package")

urlpatterns = [
    path(f"schemas/{SCHEMA_NAME}", viewsets.BundleManifestSchemaView.as_view(), name="schema-bundle-manifest"),
    path("manifests/validate", viewsets.ManifestValidateView.as_view(), name="manifest-validate"),
    *router.urls,
]
