"""Hooks other apps add to the heartbeat: read extra fields, add fields to the response.

    register_heartbeat_hook("builds", builds_on_heartbeat, fields=("running_build_ids",),
                            async_hook=builds_on_heartbeat_async)

A hook is `hook(drone_id: int, body: dict) -> dict | None`; it runs inside
the heartbeat request after the drone row was updated, and whatever dict it
returns is merged into the heartbeat response (e.g. `{"cancel_build_ids": [...]}`).
`fields` names the body fields the hook acts on: it runs only on heartbeats
that set one of them. `async_hook(async_connection, drone_id, body)` is the
same hook for the event-loop fast path (drones/fastpath.py), on its psycopg
async connection; a heartbeat that a hook without one must see is answered
by Django's view instead. Keep hooks cheap: the heartbeat is the fleet's
hottest endpoint.
"""
from collections.abc import Awaitable, Callable, Iterable

HeartbeatHook = Callable[[int, dict], dict | None]
AsyncHeartbeatHook = Callable[[object, int, dict], Awaitable[dict | None]]

_hooks: dict[str, HeartbeatHook] = {}
_async_hooks: dict[str, AsyncHeartbeatHook | None] = {}
_fields: dict[str, frozenset[str]] = {}


def register_heartbeat_hook(name: str, hook: HeartbeatHook, *, fields: Iterable[str],
                            async_hook: AsyncHeartbeatHook | None = None) -> None:
    """Run `hook` on every heartbeat that sets one of `fields` (one hook per name; re-registering replaces it)."""
    _hooks[name] = hook
    _async_hooks[name] = async_hook
    _fields[name] = frozenset(fields)


def _acts_on(name: str, body: dict) -> bool:
    return any(body.get(field) for field in _fields[name])


def heartbeat_needs_sync_hooks(body: dict) -> bool:
    """Whether a hook without an async variant acts on this heartbeat body (then Django's view must answer)."""
    return any(_acts_on(name, body) and _async_hooks[name] is None for name in _hooks)


async def run_heartbeat_hooks_async(async_connection, drone_id: int, body: dict) -> dict:
    """Run every async hook whose fields the body sets, and merge what they return."""
    extra: dict = {}
    for name, hook in _async_hooks.items():
        if hook is None or not _acts_on(name, body):
            continue
        result = await hook(async_connection, drone_id, body)
        if result:
            extra.update(result)
    return extra


def run_heartbeat_hooks(drone_id: int, body: dict) -> dict:
    """Run every hook whose fields the body sets, and merge what they return."""
    extra: dict = {}
    for name, hook in _hooks.items():
        if not _acts_on(name, body):
            continue
        result = hook(drone_id, body)
        if result:
            extra.update(result)
    return extra
