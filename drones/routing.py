"""WebSocket routes of the drones app."""
from django.urls import path

from drones.consumers import AgentConsumer
from drones.payloads.consumers import RolloutConsumer

websocket_urlpatterns = [
    path("ws/agent/", AgentConsumer.as_asgi()),
    path("ws/payloads/rollouts/<int:rollout_id>/", RolloutConsumer.as_asgi()),
]
