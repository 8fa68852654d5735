"""The build claim answered on the server's event loop (see swarm/core/fast_routes.py).

`POST /api/v1/builds/request` is what every idle drone sends in a loop. The
view (BuildRequestView → services.build_claim) costs about ten round trips
to the database; here the same claim takes two statements in one
transaction on an async connection:

1. the drone token is checked (and its `last_used_at` touched, as the bearer
   authentication does), the leases of the drone's running builds renewed
   (as every agent call does), the drone row locked, and the drone's
   canceling builds and whether any queue has limits read back;
2. the shared claim statement (builds/claiming.py) picks, assigns and
   returns the build with its job, as the view's path does.

It answers only what it is sure of; Django's view answers the rest: a body
the serializer would refuse, an unknown or foreign token, a drone that is
gone, and any queue with a concurrency cap or a tenant rate limit (the view
applies those step by step under the queue lock).
"""
from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from builds import events, metrics
from builds.choices import BuildState
from builds.claiming import CLAIM_STATEMENT, claim_params, claim_payload, claimed_from_row
from builds.services import NO_NEW_WORK_STATUSES, ClaimResult
from swarm.core import async_db
from swarm.core.authentication import LAST_USED_PRECISION
from swarm.core.fast_routes import FastRequest, FastResponse
from swarm.core.tokens import split_prefix, token_digest

CLAIM_CONTEXT_SQL = """
WITH token AS (
    SELECT t.id AS token_id,
           CASE WHEN t.subject_id ~ '^[0-9]{1,18}$' THEN CAST(t.subject_id AS bigint) END AS drone_id
    FROM core_apitoken t
    WHERE t.prefix = %(prefix)s AND t.digest = %(digest)s AND t.scope = 'drone' AND t.subject_type = 'drone'
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > %(now)s)
), used AS (
    UPDATE core_apitoken SET last_used_at = %(now)s
    WHERE id = (SELECT token_id FROM token) AND (last_used_at IS NULL OR last_used_at < %(used_before)s)
), renewed AS (
    UPDATE builds_build SET lease_expires_at = %(lease_until)s
    WHERE drone_id = (SELECT drone_id FROM token) AND state IN ('running', 'canceling')
      AND lease_expires_at < %(renew_before)s
)
SELECT d.id, d.name, d.status, d.labels, d.capacity,
       EXISTS (SELECT 1 FROM builds_queue q
               WHERE q.max_concurrent IS NOT NULL OR q.tenant_rate_limit_per_minute IS NOT NULL) AS limited,
       ARRAY(SELECT b.id FROM builds_build b WHERE b.drone_id = d.id AND b.state = 'canceling' ORDER BY b.id)
FROM drones_drone d WHERE d.id = (SELECT drone_id FROM token)
FOR UPDATE OF d
"""


class _HandToDjango(Exception):
    """Roll the transaction back and let the view answer."""


def _claim_request(body) -> tuple[int, list[str] | None] | None:
    """(free_slots, labels) when ClaimRequestSerializer would accept the body as it is, else None."""
    if not isinstance(body, dict):
        return None
    free_slots = body.get("free_slots", 1)
    labels = body.get("labels")
    if type(free_slots) is not int or not 0 <= free_slots <= 1000:
        return None
    if labels is not None and not (isinstance(labels, list) and all(
            isinstance(label, str) and 0 < len(label) <= 100 and label.strip() == label for label in labels)):
        return None
    return free_slots, labels


async def claim(request: FastRequest) -> FastResponse | None:
    """`POST /api/v1/builds/request`: 201 with a build, 204 with none — or None for the view to answer."""
    token = request.bearer_token()
    wanted = _claim_request(request.json())
    prefix = split_prefix(token or "")
    if token is None or wanted is None or prefix is None:
        return None
    free_slots, labels = wanted
    started = time.perf_counter()
    now = timezone.now()
    lease = settings.SWARM_BUILD_LEASE_SECONDS
    ack_timeout = settings.SWARM_BUILD_ACK_TIMEOUT
    context_params = {"prefix": prefix, "digest": token_digest(token), "now": now,
                      "used_before": now - LAST_USED_PRECISION, "lease_until": now + timedelta(seconds=lease),
                      "renew_before": now + timedelta(seconds=lease - 1)}
    claimed = None
    pool = await async_db.pool()
    try:
        async with pool.connection() as connection, connection.transaction():
            cursor = await connection.execute(CLAIM_CONTEXT_SQL, context_params)
            drone = await cursor.fetchone()
            if drone is None or drone[5]:
                raise _HandToDjango
            drone_id, drone_name, status, drone_labels, capacity, _, canceling = drone
            if free_slots >= 1 and status not in NO_NEW_WORK_STATUSES:
                params = claim_params(drone_id=drone_id, drone_name=drone_name, capacity=capacity,
                                      labels=list(drone_labels or labels or []), now=now, lease=lease,
                                      ack_timeout=ack_timeout)
                cursor = await connection.execute(CLAIM_STATEMENT, params)
                row = await cursor.fetchone()
                if row is not None:
                    claimed = claimed_from_row(row, drone_id=drone_id, now=now)
    except _HandToDjango:
        return None
    headers = [(b"swarm-canceling-builds", ",".join(str(pk) for pk in canceling).encode())] if canceling else []
    metrics.CLAIM_SECONDS.observe(time.perf_counter() - started)
    if claimed is None:
        return FastResponse(None, status=204, headers=headers)
    build, attempt = claimed
    await events.emit_build_changed_async(build_id=build.pk, state=BuildState.ASSIGNED,
                                          attempt_number=attempt.number)
    result = ClaimResult(build=build, attempt=attempt, lease_seconds=lease, ack_timeout=ack_timeout,
                         seconds=time.perf_counter() - started)
    return FastResponse(claim_payload(result), status=201,
                        headers=[(b"job-status", build.state.encode()), *headers])
