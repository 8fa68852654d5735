"""Hooks other apps add to the heartbeat: read extra fields, add fields to the response.

    register_heartbeat_hook("builds", builds_on_heartbeat)

A hook is `hook(drone_id: int, body: dict) -> dict | None`; it runs inside
the heartbeat request after the drone row was updated, and whatever dict it
returns is merged into the heartbeat response (e.g. `{"cancel_build_ids": [...]}`).
Keep hooks cheap: the heartbeat is the fleet's hottest endpoint.
"""
from collections.abc import Callable

HeartbeatHook = Callable[[int, dict], dict | None]

_hooks: dict[str, HeartbeatHook] = {}


def register_heartbeat_hook(name: str, hook: HeartbeatHook) -> None:
    """Run `hook` on every heartbeat (one hook per name; re-registering replaces it)."""
    _hooks[name] = hook


def run_heartbeat_hooks(drone_id: int, body: dict) -> dict:
    """Run every hook and merge what they return."""
    extra: dict = {}
    for hook in _hooks.values():
        result = hook(drone_id, body)
        if result:
            extra.update(result)
    return extra
