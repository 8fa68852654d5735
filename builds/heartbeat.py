"""What builds add to the drone heartbeat: lease renewal and the list of builds to cancel.

The heartbeat is the fleet's hottest endpoint: a drone running nothing costs
no query here; one running builds costs one `UPDATE … RETURNING` that renews
their leases and reports which of them are being canceled — on Django's
connection in the view, on the async connection on the event-loop fast path.
`running_build_ids` arrives checked by drones.protocol.heartbeat_parse (a
list of build ids).
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from builds.choices import BuildState
from builds.models import Build
from drones.services.heartbeat import register_heartbeat_hook

RENEW_SQL = f"""
UPDATE {Build._meta.db_table} SET lease_expires_at = %(until)s
WHERE id = ANY(%(ids)s::bigint[]) AND drone_id = %(drone)s AND state IN (%(running)s, %(canceling)s)
RETURNING id, state
"""


def _renew_params(drone_id: int, body: dict) -> dict | None:
    """RENEW_SQL's parameters for the builds the heartbeat reports, or None when it reports none."""
    running = body.get("running_build_ids") or []
    if not running:
        return None
    until = timezone.now() + timedelta(seconds=settings.SWARM_BUILD_LEASE_SECONDS)
    return {"until": until, "ids": running, "drone": drone_id, "running": BuildState.RUNNING.value,
            "canceling": BuildState.CANCELING.value}


def _answer(rows) -> dict | None:
    canceling = sorted(pk for pk, state in rows if state == BuildState.CANCELING)
    return {"cancel_build_ids": canceling} if canceling else None


def builds_on_heartbeat(drone_id: int, body: dict) -> dict | None:
    """Renew leases of the builds the agent says it runs; answer the ones it must cancel."""
    params = _renew_params(drone_id, body)
    if params is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(RENEW_SQL, params)
        return _answer(cursor.fetchall())


async def builds_on_heartbeat_async(async_connection, drone_id: int, body: dict) -> dict | None:
    """`builds_on_heartbeat` on the heartbeat fast path's async connection."""
    params = _renew_params(drone_id, body)
    if params is None:
        return None
    cursor = await async_connection.execute(RENEW_SQL, params)
    return _answer(await cursor.fetchall())


def register() -> None:
    """Hook into the drones app's heartbeat."""
    register_heartbeat_hook(name="builds", hook=builds_on_heartbeat, fields=("running_build_ids",),
                            async_hook=builds_on_heartbeat_async)
