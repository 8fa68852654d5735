"""ASGI entry point: Django for HTTP, Channels for WebSockets."""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swarm.settings")
django.setup(set_prefix=False)

from swarm.core.streaming_asgi import StreamingBodyASGIHandler  # noqa: E402  (needs settings)

# Bundle uploads stream their body into the view (see swarm/core/streaming_asgi.py);
# every other request is handled exactly as by django.core.asgi.get_asgi_application().
BUNDLE_UPLOAD_ROUTES = [
    ("POST", r"^/api/v1/bundles/?$"),
    ("PUT", r"^/api/v1/bundles/[0-9A-Fa-f]{64}/?$"),
]
django_asgi_app = StreamingBodyASGIHandler(streaming_routes=BUNDLE_UPLOAD_ROUTES)

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from swarm.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
