"""WebSocket routes of the drones app."""
from django.urls import path

from drones.consumers import AgentConsumer
from drones.payloads.consumers import RolloutConsumer
from drones.terminal.consumer import TerminalConsumer
from drones.terminal.syslog import DroneSyslogConsumer
from drones.topology.consumer import TopologyConsumer

websocket_urlpatterns = [
    path("ws/agent/", AgentConsumer.as_asgi()),
    path("ws/topology/", TopologyConsumer.as_asgi()),
    path("ws/terminal/<str:drone>/", TerminalConsumer.as_asgi()),
    path("ws/syslog/<str:drone>/", DroneSyslogConsumer.as_asgi()),
    path("ws/payloads/rollouts/<int:rollout_id>/", RolloutConsumer.as_asgi()),
]
