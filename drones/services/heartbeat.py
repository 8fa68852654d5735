"""Heartbeats: one statement records a drone's heartbeat and reads back the answer; hooks add to it.

The heartbeat is the fleet's hottest endpoint. `drone_heartbeat` (Django's
view) and `drone_heartbeat_async` (the event-loop fast path,
drones/fastpath.py) build the same statement (`heartbeat_statement`) and the
same answer (`heartbeat_answer`).

Hooks are how other apps take part without this app importing them (the
builds app renews leases and lists builds to cancel; builds/heartbeat.py):

    register_heartbeat_hook(name="builds", hook=builds_on_heartbeat, fields=("running_build_ids",),
                            async_hook=builds_on_heartbeat_async)

A hook is `hook(drone_id: int, body: dict) -> dict | None`; it runs inside
the heartbeat request after the drone row was updated, and whatever dict it
returns is merged into the heartbeat response (e.g. `{"cancel_build_ids": [...]}`).
`fields` names the body fields the hook acts on: it runs only on heartbeats
that set one of them (every heartbeat when `fields` is empty). `async_hook(async_connection, drone_id, body)` is the
same hook for the event-loop fast path, on its psycopg async connection; a
heartbeat that a hook without one must see is answered by Django's view
instead. Keep hooks cheap.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from drones.choices import DroneAction, DroneStatus, ProvisioningStatus
from drones.models import JoinToken
from drones.protocol import MAX_METRICS_BYTES  # noqa: F401 - re-exported by drones.services
from swarm.core import async_db
from swarm.core.tokens import split_prefix, token_digest


HeartbeatHook = Callable[[int, dict], dict | None]
AsyncHeartbeatHook = Callable[[object, int, dict], Awaitable[dict | None]]

_hooks: dict[str, HeartbeatHook] = {}
_async_hooks: dict[str, AsyncHeartbeatHook | None] = {}
_fields: dict[str, frozenset[str]] = {}


def register_heartbeat_hook(*, name: str, hook: HeartbeatHook, fields: Iterable[str],
                            async_hook: AsyncHeartbeatHook | None = None) -> None:
    """Run `hook` on every heartbeat that sets one of `fields` (one hook per name; re-registering replaces it)."""
    _hooks[name] = hook
    _async_hooks[name] = async_hook
    _fields[name] = frozenset(fields)


def _acts_on(name: str, body: dict) -> bool:
    # A hook that names no fields (the topology feed's) sees every heartbeat.
    return not _fields[name] or any(body.get(field) for field in _fields[name])


def heartbeat_needs_sync_hooks(*, body: dict) -> bool:
    """Whether a hook without an async variant acts on this heartbeat body (then Django's view must answer)."""
    return any(_acts_on(name, body) and _async_hooks[name] is None for name in _hooks)


async def run_heartbeat_hooks_async(*, async_connection, drone_id: int, body: dict) -> dict:
    """Run every async hook whose fields the body sets, and merge what they return."""
    extra: dict = {}
    for name, hook in _async_hooks.items():
        if hook is None or not _acts_on(name, body):
            continue
        result = await hook(async_connection, drone_id, body)
        if result:
            extra.update(result)
    return extra


def run_heartbeat_hooks(*, drone_id: int, body: dict) -> dict:
    """Run every hook whose fields the body sets, and merge what they return."""
    extra: dict = {}
    for name, hook in _hooks.items():
        if not _acts_on(name, body):
            continue
        result = hook(drone_id, body)
        if result:
            extra.update(result)
    return extra


def drone_intervals() -> dict:
    """The server-set intervals every registration and heartbeat response carries."""
    return {
        "heartbeat_interval": settings.SWARM_DRONE_HEARTBEAT_INTERVAL,
        "ping_interval": settings.SWARM_DRONE_PING_INTERVAL,
    }


def action_for(*, status: str, stop_requested: bool) -> str:
    """The action a heartbeat response tells the agent to take."""
    if stop_requested:
        return DroneAction.STOP
    if status == DroneStatus.PAUSED:
        return DroneAction.PAUSE
    if status == DroneStatus.DRAINING:
        return DroneAction.DRAIN
    return DroneAction.RUN


# One statement per heartbeat: find the drone through its token (prefix + sha256
# digest, by the one drone token rule `swarm_drone_token_check`, which is STABLE:
# it runs once and the drone is then an index hit), record the heartbeat, bring
# a stale/offline drone back online, remember the first heartbeat and read back
# what the answer needs.
# `synchronous_commit` is relaxed for this statement only: losing the last
# heartbeat on a database crash costs nothing (the next one comes within an
# interval), and not waiting for the WAL flush halves the endpoint's latency.
HEARTBEAT_SQL = """
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE drones_drone AS drone SET
    last_heartbeat_at = %(now)s,
    last_seen_at = %(now)s,
    metrics = %(metrics)s::jsonb,
    status = CASE WHEN drone.status IN ('stale', 'offline') THEN 'online' ELSE drone.status END,
    first_heartbeat_at = COALESCE(drone.first_heartbeat_at, %(now)s)
FROM relaxed
WHERE drone.id = swarm_drone_token_check(%(prefix)s, %(digest)s, %(now)s)
RETURNING drone.id, drone.status, drone.stop_requested, drone.first_heartbeat_at = %(now)s
"""


FIRST_HEARTBEAT_SQL = f"""
UPDATE {JoinToken._meta.db_table} SET provisioning_status = %(heartbeat)s, first_heartbeat_at = %(now)s
WHERE last_drone_id = %(drone)s AND provisioning_status <> %(heartbeat)s
"""


@dataclass(frozen=True)
class HeartbeatStatement:
    """The parameters of HEARTBEAT_SQL for one heartbeat, ready for any psycopg cursor (sync or async)."""

    params: dict

    @property
    def now(self) -> datetime:
        return self.params["now"]


def heartbeat_statement(*, token: str, heartbeat: dict) -> HeartbeatStatement | None:
    """The statement of a heartbeat `heartbeat_parse` (drones/protocol.py) accepted; None when the token is malformed.

    Shared by the view and the event-loop fast path (drones/fastpath.py), so
    both record exactly the same thing.
    """
    prefix = split_prefix(token or "")
    if prefix is None:
        return None
    return HeartbeatStatement({"now": timezone.now(), "metrics": heartbeat["metrics_json"], "prefix": prefix,
                               "digest": token_digest(token)})


def heartbeat_answer(*, row) -> tuple[dict, bool]:
    """The heartbeat answer (with `drone_id`) from HEARTBEAT_SQL's row, and whether it was the first heartbeat."""
    drone_id, status, stop_requested, first = row
    return ({"drone_id": drone_id, "action": action_for(status=status, stop_requested=stop_requested), "status": status,
             **drone_intervals()}, bool(first))


def first_heartbeat_params(*, drone_id: int, now: datetime) -> dict:
    """FIRST_HEARTBEAT_SQL's parameters: the join token that provisioned the drone reaches its last step."""
    return {"heartbeat": ProvisioningStatus.HEARTBEAT.value, "now": now, "drone": drone_id}


def drone_heartbeat(*, token: str, heartbeat: dict) -> dict | None:
    """Record a heartbeat (parsed by `heartbeat_parse`) for the drone a drone token belongs to, in one statement.

    Returns `{drone_id, action, status, intervals…}`, or None when the token
    is not a usable drone token of an existing drone (the caller then works out
    the right 401/403/404 on the slow path). The first heartbeat also moves
    the join token's provisioning status on.
    """
    statement = heartbeat_statement(token=token, heartbeat=heartbeat)
    if statement is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(HEARTBEAT_SQL, statement.params)
        row = cursor.fetchone()
        if row is None:
            return None
        answer, first = heartbeat_answer(row=row)
        if first:
            cursor.execute(FIRST_HEARTBEAT_SQL, first_heartbeat_params(drone_id=answer["drone_id"],
                                                                       now=statement.now))
    return answer


async def drone_heartbeat_async(*, token: str, heartbeat: dict) -> dict | None:
    """`drone_heartbeat` plus the heartbeat hooks, on the event loop's async connection (drones/fastpath.py).

    Same statement as the view; the hooks run in their async variants.
    Returns None when the token is not a usable drone token of an existing
    drone (nothing is written then).
    """
    statement = heartbeat_statement(token=token, heartbeat=heartbeat)
    if statement is None:
        return None
    pool = await async_db.pool()
    async with pool.connection() as connection:
        cursor = await connection.execute(HEARTBEAT_SQL, statement.params)
        row = await cursor.fetchone()
        if row is None:
            return None
        answer, first = heartbeat_answer(row=row)
        if first:
            await connection.execute(FIRST_HEARTBEAT_SQL, first_heartbeat_params(drone_id=answer["drone_id"],
                                                                                 now=statement.now))
        answer.update(await run_heartbeat_hooks_async(async_connection=connection, drone_id=answer["drone_id"],
                                                      body=heartbeat))
    return answer
