"""The one place the drones app talks outwards: messages to a drone's WebSocket (Channels group `drone.<id>`),
and notices to the operator's live views (the topology feed, the drones list, the dashboard).
"""
import logging

from channels.layers import get_channel_layer

from swarm.core import group_notices
from swarm.core.event_loop import run_async

logger = logging.getLogger(__name__)

AGENT_MESSAGE_EVENT = "agent.message"


def drone_group(drone_id: int) -> str:
    """The Channels group the drone's agent consumer joins."""
    return f"drone.{int(drone_id)}"


async def drone_send_async(drone_id: int, message: dict) -> None:
    """Push a JSON message to the drone's agent (async callers)."""
    layer = get_channel_layer()
    await layer.group_send(drone_group(drone_id), {"type": AGENT_MESSAGE_EVENT, "message": message})


def drone_send(drone_id: int, message: dict) -> None:
    """Push a JSON message to the drone's agent over its WebSocket (sync callers: views, tasks).

    Delivery is best effort: when no agent is connected the message is
    dropped by the channel layer, which callers detect through the missing
    reply (pong, ack) rather than here.
    """
    if "type" not in message:
        raise ValueError("a message to a drone needs a 'type'")
    run_async(drone_send_async, drone_id, message)


def drones_send(messages: list[tuple[int, dict]]) -> None:
    """Push messages to many drones at once (e.g. the health check's pings); raises when the layer fails.

    One lookup finds which of the drones have an agent connected
    (swarm.core.group_notices.deliver_or_raise); only those get a send.
    """
    notices = [(drone_group(drone_id), {"type": AGENT_MESSAGE_EVENT, "message": message})
               for drone_id, message in messages]
    run_async(group_notices.deliver_or_raise, notices)


def drone_disconnect(drone_id: int, *, code: int = 4000) -> None:
    """Close the drone's WebSocket from the server side (the agent reconnects with its token, if still valid)."""
    run_async(get_channel_layer().group_send, drone_group(drone_id), {"type": "agent.close", "code": code})


def drone_changed(drone_id: int, **fields) -> None:
    """A drone's state changed (status, level, latency_ms, ws): the topology and the live lists hear of it."""
    from drones import topology
    from swarm.core.live import live_changed

    topology.topology_changed(drone_id, **fields)
    live_changed("drones")


def drones_changed(drone_ids, **fields) -> None:
    """`drone_changed` for many drones with the same new fields."""
    from drones import topology
    from swarm.core.live import live_changed

    drone_ids = list(drone_ids)
    if drone_ids:
        topology.topology_changed_many(drone_ids, **fields)
        live_changed("drones")


def escalation_stepped(event) -> None:
    """A ladder step (or reset) was recorded: the topology's node and table, the lists and the cards follow."""
    from drones import topology
    from swarm.core.live import live_changed

    topology.topology_event(event.drone_id, level=event.level, action=event.action, result=event.result,
                            at=event.at.timestamp(), detail=event.detail)
    live_changed("drones")
