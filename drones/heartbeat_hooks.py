"""Hooks other apps add to the heartbeat: read extra fields, add fields to the response.

    register_heartbeat_hook("builds", builds_on_heartbeat, fields=("running_build_ids",))

A hook is `hook(drone_id: int, body: dict) -> dict | None`; it runs inside
the heartbeat request after the drone row was updated, and whatever dict it
returns is merged into the heartbeat response (e.g. `{"cancel_build_ids": [...]}`).
`fields` names the body fields the hook acts on: a heartbeat in which none of
them is set skips the hooks and may be answered by the event-loop fast path
(drones/fastpath.py). Keep hooks cheap: the heartbeat is the fleet's hottest endpoint.
"""
from collections.abc import Callable, Iterable

HeartbeatHook = Callable[[int, dict], dict | None]

_hooks: dict[str, HeartbeatHook] = {}
_fields: dict[str, frozenset[str]] = {}


def register_heartbeat_hook(name: str, hook: HeartbeatHook, *, fields: Iterable[str]) -> None:
    """Run `hook` on every heartbeat that sets one of `fields` (one hook per name; re-registering replaces it)."""
    _hooks[name] = hook
    _fields[name] = frozenset(fields)


def heartbeat_needs_hooks(body: dict) -> bool:
    """Whether some hook acts on this heartbeat body."""
    return any(body.get(field) for fields in _fields.values() for field in fields)


def run_heartbeat_hooks(drone_id: int, body: dict) -> dict:
    """Run every hook whose fields the body sets, and merge what they return."""
    extra: dict = {}
    for name, hook in _hooks.items():
        if not any(body.get(field) for field in _fields[name]):
            continue
        result = hook(drone_id, body)
        if result:
            extra.update(result)
    return extra
