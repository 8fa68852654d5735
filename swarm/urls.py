"""Root URL configuration: admin, API v1, OpenAPI schema and docs, health probes."""
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from swarm.core import health

handler404 = "swarm.core.errors.api_not_found"
handler500 = "swarm.core.errors.api_server_error"

api_v1 = [
    path("", include("workflows.api.bundle_urls")),  # PUT /bundles/<sha256> must win over bundles' GET route
    path("", include("bundles.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("drones.api.urls")),
    path("", include("drones.payloads.api.urls")),
    path("", include("builds.api.urls")),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("django_prometheus.urls")),
]
