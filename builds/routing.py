"""WebSocket routes of the builds app."""
from django.urls import path

from builds.consumers import BuildLogConsumer

websocket_urlpatterns = [
    path("ws/builds/<int:build_id>/log/", BuildLogConsumer.as_asgi()),
]
