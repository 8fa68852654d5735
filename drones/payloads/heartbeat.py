"""Storing the payload hashes every heartbeat carries (`payload_hashes`: type name → sha256).

One statement for the whole map, the same on Django's connection (the view)
and on the event-loop fast path's async connection: an upsert that writes
only when a hash *changed*, so a drone whose payloads are as they were
costs no row write. When something changed, the drone's drift is checked
by a task (drones.check_payload_drift) instead of on the hot path.
Names that are no payload type are ignored; malformed values are dropped
(the heartbeat itself never fails because of them).
"""
from __future__ import annotations

import json
import logging
import re

from django.db import connection
from django.utils import timezone

from drones.payloads.models import DronePayloadState, PayloadType

logger = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_TYPES = 64

RECORD_SQL = f"""
INSERT INTO {DronePayloadState._meta.db_table} AS state
    (drone_id, payload_type_id, reported_sha256, reported_at, drifted, drift_detail)
SELECT %(drone)s, payload_type.id, reported.sha256, %(now)s, false, ''
FROM jsonb_each_text(%(hashes)s::jsonb) AS reported(name, sha256)
JOIN {PayloadType._meta.db_table} AS payload_type ON payload_type.name = reported.name
ON CONFLICT (drone_id, payload_type_id) DO UPDATE
    SET reported_sha256 = EXCLUDED.reported_sha256, reported_at = EXCLUDED.reported_at
    WHERE state.reported_sha256 IS DISTINCT FROM EXCLUDED.reported_sha256
RETURNING payload_type_id
"""


def _clean(hashes) -> dict[str, str] | None:
    if not isinstance(hashes, dict) or not hashes:
        return None
    cleaned = {str(name)[:64]: value.lower() for name, value in list(hashes.items())[:MAX_TYPES]
               if isinstance(value, str) and SHA256.match(value.lower())}
    return cleaned or None


def _params(drone_id: int, hashes: dict[str, str]) -> dict:
    return {"drone": drone_id, "now": timezone.now(), "hashes": json.dumps(hashes)}


def _check_drift_later(drone_id: int) -> None:
    from drones.payloads.tasks import check_payload_drift

    try:
        check_payload_drift.apply_async(args=[drone_id])
    except Exception:  # noqa: BLE001 - beat's fleet-wide check catches it
        logger.warning("could not queue the drift check of drone %s", drone_id, exc_info=True)


def payload_hashes_record(*, drone_id: int, hashes) -> bool:
    """Store the hashes a drone reports; True when one changed (then its drift check is queued)."""
    cleaned = _clean(hashes)
    if cleaned is None:
        return False
    with connection.cursor() as cursor:
        cursor.execute(RECORD_SQL, _params(drone_id, cleaned))
        changed = bool(cursor.fetchall())
    if changed:
        from django.db import transaction

        transaction.on_commit(lambda: _check_drift_later(drone_id))
    return changed


async def payload_hashes_record_async(*, async_connection, drone_id: int, hashes) -> bool:
    """`payload_hashes_record` on the heartbeat fast path's async connection (autocommit)."""
    import asyncio

    cleaned = _clean(hashes)
    if cleaned is None:
        return False
    cursor = await async_connection.execute(RECORD_SQL, _params(drone_id, cleaned))
    changed = bool(await cursor.fetchall())
    if changed:
        await asyncio.get_running_loop().run_in_executor(None, _check_drift_later, drone_id)
    return changed


def payloads_on_heartbeat(drone_id: int, body: dict) -> None:
    """Heartbeat hook (Django's view)."""
    payload_hashes_record(drone_id=drone_id, hashes=body.get("payload_hashes"))


async def payloads_on_heartbeat_async(async_connection, drone_id: int, body: dict) -> None:
    """Heartbeat hook (the event-loop fast path)."""
    await payload_hashes_record_async(async_connection=async_connection, drone_id=drone_id,
                                      hashes=body.get("payload_hashes"))


def register() -> None:
    """Hook into the drones app's heartbeat (called from DronesConfig.ready)."""
    from drones.services.heartbeat import register_heartbeat_hook

    register_heartbeat_hook(name="payloads", hook=payloads_on_heartbeat, fields=("payload_hashes",),
                            async_hook=payloads_on_heartbeat_async)
