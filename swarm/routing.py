"""WebSocket routes of the ASGI app; each app contributes its own patterns."""
from django.urls import path

from swarm.core.consumers import ControlPlaneLogConsumer, LiveAdminConsumer

websocket_urlpatterns: list = [
    path("ws/admin/live/", LiveAdminConsumer.as_asgi()),
    path("ws/logs/", ControlPlaneLogConsumer.as_asgi()),
]

from drones.routing import websocket_urlpatterns as drone_websocket_urlpatterns  # noqa: E402

websocket_urlpatterns += drone_websocket_urlpatterns

from builds.routing import websocket_urlpatterns as build_websocket_urlpatterns  # noqa: E402

websocket_urlpatterns += build_websocket_urlpatterns
