"""Root URL configuration: admin (and its log page), API v1, OpenAPI schema and docs, health probes."""
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from builds.protocol import MAX_LOG_PATCH_BYTES
from swarm.core import health
from swarm.core.fast_routes import FastRoute
from tenancy.urls import admin_redirects
from swarm.core.admin import control_plane_logs_view

handler404 = "swarm.core.errors.api_not_found"
handler500 = "swarm.core.errors.api_server_error"

api_v1 = [
    path("", include("workflows.api.bundle_urls")),  # PUT /bundles/<sha256> must win over bundles' GET route
    path("", include("bundles.api.urls")),
    path("", include("tenancy.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("drones.api.urls")),
    path("", include("drones.payloads.api.urls")),
    path("", include("builds.api.urls")),
    path("", include("deployments.api.urls")),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    *admin_redirects,
    # The control plane has no public site: its root is the admin.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="root"),
    path("admin/logs/", admin.site.admin_view(control_plane_logs_view), name="admin-control-plane-logs"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its init script as a file: no inline script under the CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("", include("django_prometheus.urls")),
]

#: The agent requests answered on the server's event loop when they are plain ones (swarm/core/fast_routes.py),
#: each by the name of its route above: a path these patterns do not serve is never answered there either.
FAST_ROUTES = [
    FastRoute("drone-heartbeat", "drones.fastpath.heartbeat", method="POST", max_body=64 * 1024),
    FastRoute("build-request", "builds.fastpath.claim", method="POST", max_body=16 * 1024),
    FastRoute("build-log", "builds.fastpath.log_append", method="PATCH", max_body=MAX_LOG_PATCH_BYTES),
    FastRoute("payload-agent-report", "drones.payloads.fastpath.report", method="POST", max_body=64 * 1024),
]
