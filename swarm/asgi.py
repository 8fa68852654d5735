"""ASGI entry point: Django for HTTP (on a thread pool), Channels for WebSockets."""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swarm.settings")
django.setup(set_prefix=False)

from builds.protocol import MAX_LOG_PATCH_BYTES  # noqa: E402  (needs settings)
from swarm.core.fast_routes import FastRoute  # noqa: E402  (needs settings)
from swarm.core.http_asgi import DjangoHTTPApp  # noqa: E402  (needs settings)

# Bundle uploads stream their body into the view through Django's ASGI handler
# (see swarm/core/streaming_asgi.py); every other request runs on Django's WSGI
# handler on a fixed pool of threads (see swarm/core/http_asgi.py).
BUNDLE_UPLOAD_ROUTES = [
    ("POST", r"^/api/v1/bundles/?$"),
    ("PUT", r"^/api/v1/bundles/[0-9A-Fa-f]{64}/?$"),
]
# The fleet's hottest requests — heartbeats, build claims and log appends — are
# answered on the event loop when they are plain ones (see
# swarm/core/fast_routes.py); Django answers the rest.
FAST_ROUTES = [
    FastRoute("POST", r"^/api/v1/drones/heartbeat/?$", "drones.fastpath.heartbeat", max_body=64 * 1024),
    FastRoute("POST", r"^/api/v1/builds/request/?$", "builds.fastpath.claim", max_body=16 * 1024),
    FastRoute("PATCH", r"^/api/v1/builds/(?P<build_id>[0-9]{1,18})/log/?$", "builds.fastpath.log_append",
              max_body=MAX_LOG_PATCH_BYTES),
    FastRoute("POST", r"^/api/v1/payloads/agent/report/?$", "drones.payloads.fastpath.report", max_body=64 * 1024),
]
django_http_app = DjangoHTTPApp(streaming_routes=BUNDLE_UPLOAD_ROUTES, fast_routes=FAST_ROUTES)

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from swarm.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_http_app,
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
