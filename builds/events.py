"""The one place builds talk to live viewers and drones: notices to channel-layer groups and drone pushes.

Notices to a build's viewers go through swarm.core.group_notices: queued on
the event loop, batched, and sent only when someone is watching; the request
that caused them never waits for Redis.
"""
from __future__ import annotations

import logging

from swarm.core import group_notices

logger = logging.getLogger(__name__)


def build_group_name(build_id: int) -> str:
    """Channel-layer group of everyone watching one build."""
    return f"build-{build_id}"


def _log_appended(attempt_number: int, log_size: int) -> dict:
    return {"type": "build.log", "attempt": attempt_number, "log_size": log_size}


def emit_log_appended(*, build_id: int, attempt_number: int, log_size: int) -> None:
    """Tell live viewers that an attempt's log grew to `log_size` bytes (they read the new bytes)."""
    group_notices.notify_from_thread(build_group_name(build_id), _log_appended(attempt_number, log_size))


async def emit_log_appended_async(*, build_id: int, attempt_number: int, log_size: int) -> None:
    """`emit_log_appended` from code running on the event loop."""
    group_notices.notify(build_group_name(build_id), _log_appended(attempt_number, log_size))


def _build_changed(state: str, attempt_number: int) -> dict:
    return {"type": "build.state", "state": state, "attempt": attempt_number}


def emit_build_changed(*, build_id: int, state: str, attempt_number: int) -> None:
    """Tell live viewers that a build changed state or started a new attempt."""
    group_notices.notify_from_thread(build_group_name(build_id), _build_changed(state, attempt_number))


async def emit_build_changed_async(*, build_id: int, state: str, attempt_number: int) -> None:
    """`emit_build_changed` from code running on the event loop."""
    group_notices.notify(build_group_name(build_id), _build_changed(state, attempt_number))


def tell_drone(drone_id: int, message: dict) -> None:
    """Push a message to a drone's WebSocket through the drones app's single sender."""
    from drones.events import drone_send

    try:
        drone_send(drone_id, message)
    except Exception:  # noqa: BLE001 - the agent also polls, so a lost push only delays
        logger.warning("could not push %s to drone %s", message.get("type"), drone_id, exc_info=True)
