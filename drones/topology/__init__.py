"""The fleet topology: the live feed (`feed`), what the page reads (`history`), and its consumer (`consumer`).

Domain code reports through the feed (`topology_heartbeat`, `topology_pong`,
`topology_changed`, `topology_event`, `topology_activity`); the page at
`/admin/drones/drone/topology/` (drones/admin.py) reads through `history`
and listens on `/ws/topology/` (drones/topology/consumer.py).
"""
from drones.topology.feed import (
    TOPOLOGY_GROUP,
    topology_activity,
    topology_changed,
    topology_changed_many,
    topology_event,
    topology_heartbeat,
    topology_pong,
)

__all__ = ["TOPOLOGY_GROUP", "topology_activity", "topology_changed", "topology_changed_many", "topology_event",
           "topology_heartbeat", "topology_pong"]
