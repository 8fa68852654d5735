"""The one place builds talk to live viewers and drones: channel-layer group sends and drone pushes."""
from __future__ import annotations

import logging

from channels.layers import get_channel_layer

from swarm.core.event_loop import run_async

logger = logging.getLogger(__name__)


def build_group_name(build_id: int) -> str:
    """Channel-layer group of everyone watching one build."""
    return f"build-{build_id}"


async def _group_send_async(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group, message)
    except Exception:  # noqa: BLE001 - a live view missing an update must never fail a build
        logger.warning("could not notify %s", group, exc_info=True)


def _group_send(group: str, message: dict) -> None:
    try:
        run_async(_group_send_async, group, message)
    except Exception:  # noqa: BLE001 - e.g. the server loop too busy to take it in time
        logger.warning("could not notify %s", group, exc_info=True)


def _log_appended(attempt_number: int, log_size: int) -> dict:
    return {"type": "build.log", "attempt": attempt_number, "log_size": log_size}


def emit_log_appended(*, build_id: int, attempt_number: int, log_size: int) -> None:
    """Tell live viewers that an attempt's log grew to `log_size` bytes (they read the new bytes)."""
    _group_send(build_group_name(build_id), _log_appended(attempt_number, log_size))


async def emit_log_appended_async(*, build_id: int, attempt_number: int, log_size: int) -> None:
    """`emit_log_appended` from code running on the event loop."""
    await _group_send_async(build_group_name(build_id), _log_appended(attempt_number, log_size))


def _build_changed(state: str, attempt_number: int) -> dict:
    return {"type": "build.state", "state": state, "attempt": attempt_number}


def emit_build_changed(*, build_id: int, state: str, attempt_number: int) -> None:
    """Tell live viewers that a build changed state or started a new attempt."""
    _group_send(build_group_name(build_id), _build_changed(state, attempt_number))


async def emit_build_changed_async(*, build_id: int, state: str, attempt_number: int) -> None:
    """`emit_build_changed` from code running on the event loop."""
    await _group_send_async(build_group_name(build_id), _build_changed(state, attempt_number))


def tell_drone(drone_id: int, message: dict) -> None:
    """Push a message to a drone's WebSocket through the drones app's single sender."""
    from drones.events import drone_send

    try:
        drone_send(drone_id, message)
    except Exception:  # noqa: BLE001 - the agent also polls, so a lost push only delays
        logger.warning("could not push %s to drone %s", message.get("type"), drone_id, exc_info=True)
