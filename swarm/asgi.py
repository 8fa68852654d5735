"""ASGI entry point: Django for HTTP (on a thread pool), Channels for WebSockets."""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swarm.settings")
django.setup(set_prefix=False)

from swarm.core.http_asgi import DjangoHTTPApp  # noqa: E402  (needs settings)
from swarm.urls import FAST_ROUTES  # noqa: E402  (needs settings)

# Bundle uploads stream their body into the view through Django's ASGI handler
# (see swarm/core/streaming_asgi.py); every other request runs on Django's WSGI
# handler on a fixed pool of threads (see swarm/core/http_asgi.py). The hottest agent requests are
# answered on the event loop when they are plain ones (FAST_ROUTES, next to the URL table).
BUNDLE_UPLOAD_ROUTES = [
    ("POST", r"^/api/v1/bundles/?$"),
    ("PUT", r"^/api/v1/bundles/[0-9A-Fa-f]{64}/?$"),
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
