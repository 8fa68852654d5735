"""The one place builds talk to live viewers and drones: notices to channel-layer groups and drone pushes.

A build's own page listens on its group (`build-<id>`, builds/consumers.py);
the builds list and the admin dashboard on the live topic `builds`
(swarm/core/live.py); starts and finishes are counted on the fleet topology.

Notices to a build's viewers go through swarm.core.group_notices: queued on
the event loop, batched, and sent only when someone is watching; the request
that caused them never waits for Redis.
"""
from __future__ import annotations

import logging

from builds.choices import TERMINAL_STATES, BuildState
from swarm.core import group_notices
from swarm.core.live import live_changed, live_changed_from_loop

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


def _count_on_topology(state: str) -> None:
    """Build starts and finishes are part of the fleet's activity waveform."""
    from drones.topology import topology_activity

    if state == BuildState.RUNNING:
        topology_activity("build_start")
    elif state in TERMINAL_STATES:
        topology_activity("build_finish")


def emit_build_changed(*, build_id: int, state: str, attempt_number: int) -> None:
    """Tell live viewers that a build changed state or started a new attempt (its page, the lists, the dashboard)."""
    group_notices.notify_from_thread(build_group_name(build_id), _build_changed(state, attempt_number))
    live_changed("builds")
    _count_on_topology(state)


async def emit_build_changed_async(*, build_id: int, state: str, attempt_number: int) -> None:
    """`emit_build_changed` from code running on the event loop."""
    group_notices.notify(build_group_name(build_id), _build_changed(state, attempt_number))
    live_changed_from_loop("builds")
    _count_on_topology(state)


def tell_drone(drone_id: int, message: dict) -> None:
    """Push a message to a drone's WebSocket through the drones app's single sender."""
    from drones.events import drone_send

    try:
        drone_send(drone_id, message)
    except Exception:  # noqa: BLE001 - the agent also polls, so a lost push only delays
        logger.warning("could not push %s to drone %s", message.get("type"), drone_id, exc_info=True)
