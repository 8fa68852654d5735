"""WebSocket routes of the ASGI app; each app contributes its own patterns."""
websocket_urlpatterns: list = []

from drones.routing import websocket_urlpatterns as drone_websocket_urlpatterns  # noqa: E402

websocket_urlpatterns += drone_websocket_urlpatterns

from builds.routing import websocket_urlpatterns as build_websocket_urlpatterns  # noqa: E402

websocket_urlpatterns += build_websocket_urlpatterns
