"""WebSocket routes of the ASGI app; each app contributes its own patterns."""
websocket_urlpatterns: list = []
