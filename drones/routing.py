"""WebSocket routes of the drones app."""
from django.urls import path

from drones.consumers import AgentConsumer

websocket_urlpatterns = [
    path("ws/agent/", AgentConsumer.as_asgi()),
]
