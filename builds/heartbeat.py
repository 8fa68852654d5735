"""What builds add to the drone heartbeat: lease renewal and the list of builds to cancel.

The heartbeat is the fleet's hottest endpoint: a drone running nothing costs
no query here; one running builds costs one `UPDATE … RETURNING` that renews
their leases and reports which of them are being canceled.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from builds.choices import BuildState
from builds.models import Build

RENEW_SQL = f"""
UPDATE {Build._meta.db_table} SET lease_expires_at = %(until)s
WHERE id = ANY(%(ids)s::bigint[]) AND drone_id = %(drone)s AND state IN (%(running)s, %(canceling)s)
RETURNING id, state
"""


def builds_on_heartbeat(drone_id: int, body: dict) -> dict | None:
    """Renew leases of the builds the agent says it runs; answer the ones it must cancel."""
    running = [int(pk) for pk in body.get("running_build_ids") or [] if str(pk).isdigit()]
    if not running:
        return None
    until = timezone.now() + timedelta(seconds=settings.SWARM_BUILD_LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(RENEW_SQL, {"until": until, "ids": running, "drone": drone_id,
                                   "running": BuildState.RUNNING.value, "canceling": BuildState.CANCELING.value})
        rows = cursor.fetchall()
    canceling = sorted(pk for pk, state in rows if state == BuildState.CANCELING)
    return {"cancel_build_ids": canceling} if canceling else None


def register() -> None:
    """Hook into the drones app's heartbeat (when it offers hooks)."""
    try:
        from drones.heartbeat_hooks import register_heartbeat_hook
    except ImportError:  # the drones app predates heartbeat hooks
        return
    register_heartbeat_hook("builds", builds_on_heartbeat, fields=("running_build_ids",))
