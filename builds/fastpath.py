"""Build claims and log appends answered on the server's event loop (see swarm/core/fast_routes.py).

`POST /api/v1/builds/request` is what every idle drone sends in a loop, and a
running build streams its log as `PATCH /api/v1/builds/<id>/log`. Through
the views each costs about ten round trips to the database; here each takes
two statements in one transaction on an async connection. Both start with
the agent CTEs (the drone token checked and its `last_used_at` touched as the
bearer authentication does; the leases of the drone's running builds renewed
as every agent call does), then:

- claim: the drone row locked with its canceling builds and whether any
  queue has limits read back; then the shared claim statement
  (builds/claiming.py) picks, assigns and returns the build with its job;
- log: the current attempt locked; then the chunk inserted and the log size
  moved on.

They answer only what they are sure of; the views answer the rest (every
refusal among them): a body the serializer would refuse, an unknown or
foreign token, a build or drone that is gone, a queue with a concurrency cap
or a tenant rate limit (applied step by step under the queue lock), a log
patch at the wrong offset (416), for a superseded attempt (409), or past
the log's size limit.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from builds import events, metrics
from builds.choices import BuildState
from builds.claiming import claim_payload, claim_statement, claim_times, claimed_from_row
from builds.protocol import CONTENT_RANGE, MAX_LOG_PATCH_BYTES
from builds.services import NO_NEW_WORK_STATUSES, ClaimResult
from swarm.core import async_db
from swarm.core.authentication import LAST_USED_PRECISION
from swarm.core.errors import error_body
from swarm.core.fast_routes import FastRequest, FastResponse
from swarm.core.tokens import split_prefix, token_digest

# What every agent call does first: check the drone token (touching its
# last_used_at as the bearer authentication does) and renew the leases of the
# drone's running builds (any agent call proves it alive). A statement starts
# with these and goes on from the `token` CTE.
logger = logging.getLogger(__name__)

TOKEN_CTE = """token AS (
    SELECT t.id AS token_id,
           CASE WHEN t.subject_id ~ '^[0-9]{1,18}$' THEN CAST(t.subject_id AS bigint) END AS drone_id
    FROM core_apitoken t
    WHERE t.prefix = %(prefix)s AND t.digest = %(digest)s AND t.scope = 'drone' AND t.subject_type = 'drone'
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > %(now)s)
)"""

AGENT_CTES = f"""
WITH {TOKEN_CTE}, used AS (
    UPDATE core_apitoken SET last_used_at = %(now)s
    WHERE id = (SELECT token_id FROM token) AND (last_used_at IS NULL OR last_used_at < %(used_before)s)
), renewed AS (
    UPDATE builds_build SET lease_expires_at = %(lease_until)s
    WHERE drone_id = (SELECT drone_id FROM token) AND state IN ('running', 'canceling')
      AND lease_expires_at < %(renew_before)s
)
"""

CLAIM_CONTEXT_SQL = AGENT_CTES + """
SELECT d.id,
       EXISTS (SELECT 1 FROM builds_queue q
               WHERE q.max_concurrent IS NOT NULL OR q.tenant_rate_limit_per_minute IS NOT NULL) AS limited,
       ARRAY(SELECT b.id FROM builds_build b WHERE b.drone_id = d.id AND b.state = 'canceling' ORDER BY b.id)
FROM drones_drone d WHERE d.id = (SELECT drone_id FROM token)
FOR UPDATE OF d
"""

# The claim itself, right after CLAIM_CONTEXT_SQL in the same transaction: it
# runs after that statement took the drone's row lock, so its snapshot sees
# every earlier claim of the drone. It reads the drone again (by the token) and
# claims nothing when the drone may not take work or a queue has limits (the
# view handles those). The drone's labels win; the request's apply when it has none.
FAST_CLAIM_SQL = claim_statement(TOKEN_CTE + """, drone AS (
    SELECT d.id, d.name, d.capacity,
           CASE WHEN jsonb_typeof(d.labels) = 'array' AND jsonb_array_length(d.labels) > 0
                THEN ARRAY(SELECT jsonb_array_elements_text(d.labels))::varchar[]
                ELSE %(labels)s::varchar[] END AS labels
    FROM drones_drone d
    WHERE d.id = (SELECT drone_id FROM token) AND %(free_slots)s >= 1 AND NOT (d.status = ANY(%(no_new_work)s))
      AND NOT EXISTS (SELECT 1 FROM builds_queue q
                      WHERE q.max_concurrent IS NOT NULL OR q.tenant_rate_limit_per_minute IS NOT NULL)
)""")

# The current attempt of a build this drone holds, locked (lock order: build, then attempt).
LOG_CONTEXT_SQL = AGENT_CTES + """
SELECT a.id, a.number, a.log_size, a.log_storage_key, b.state
FROM builds_build b JOIN builds_buildattempt a ON a.build_id = b.id AND a.number = b.attempt_count
WHERE b.id = %(build)s AND b.drone_id = (SELECT drone_id FROM token) AND a.drone_id = b.drone_id
FOR UPDATE OF a
"""

LOG_APPEND_SQL = """
WITH chunk AS (
    INSERT INTO builds_buildlogchunk (attempt_id, "offset", data) VALUES (%(attempt)s, %(offset)s, %(data)s)
)
UPDATE builds_buildattempt SET log_size = %(size)s WHERE id = %(attempt)s
"""


def agent_params(token: str, now) -> dict | None:
    """AGENT_CTES' parameters for a presented token; None when it is malformed."""
    prefix = split_prefix(token or "")
    if prefix is None:
        return None
    lease = settings.SWARM_BUILD_LEASE_SECONDS
    return {"prefix": prefix, "digest": token_digest(token), "now": now, "used_before": now - LAST_USED_PRECISION,
            "lease_until": now + timedelta(seconds=lease), "renew_before": now + timedelta(seconds=lease - 1)}


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
    started = time.perf_counter()
    now = timezone.now()
    wanted = _claim_request(request.json())
    context_params = agent_params(request.bearer_token(), now)
    if wanted is None or context_params is None:
        return None
    free_slots, labels = wanted
    lease = settings.SWARM_BUILD_LEASE_SECONDS
    ack_timeout = settings.SWARM_BUILD_ACK_TIMEOUT
    statement_params = {**context_params, **claim_times(now=now, lease=lease, ack_timeout=ack_timeout),
                    "labels": labels or [], "free_slots": free_slots, "no_new_work": list(NO_NEW_WORK_STATUSES)}
    pool = await async_db.pool()
    async with pool.connection() as connection:
        # Not in pipeline mode: psycopg's async pipeline polls the socket while it waits and costs
        # more CPU than the round trips it saves.
        async with connection.transaction():
            context = await connection.execute(CLAIM_CONTEXT_SQL, context_params)
            claim_cursor = await connection.execute(FAST_CLAIM_SQL, statement_params)
        drone = await context.fetchone()
        row = await claim_cursor.fetchone()
    if drone is None or drone[1]:
        return None  # no such drone token, or queue limits: nothing was claimed; the view answers
    canceling = drone[2]
    headers = [(b"swarm-canceling-builds", ",".join(str(pk) for pk in canceling).encode())] if canceling else []
    metrics.CLAIM_SECONDS.observe(time.perf_counter() - started)
    if row is None:
        return FastResponse(None, status=204, headers=headers)
    try:
        build, attempt = claimed_from_row(row, now=now)
        result = ClaimResult(build=build, attempt=attempt, lease_seconds=lease, ack_timeout=ack_timeout,
                             seconds=time.perf_counter() - started)
        payload = claim_payload(result)
    except Exception:  # noqa: BLE001 - the build is assigned now: never let the view claim another one
        logger.exception("claimed build could not be described to the drone; it returns to the queue "
                         "when its acknowledgement times out")
        return FastResponse(error_body("server_error", "The claim could not be answered; ask again."), status=500)
    await events.emit_build_changed_async(build_id=build.pk, state=BuildState.ASSIGNED,
                                          attempt_number=attempt.number)
    return FastResponse(payload, status=201, headers=[(b"job-status", build.state.encode()), *headers])


def _log_patch(request: FastRequest) -> tuple[int, int, bytes, int | None] | None:
    """(build id, start, data, attempt number) of a log PATCH the view would accept as it is, else None."""
    match = CONTENT_RANGE.match(request.headers.get("content-range", "").strip())
    data = request.body
    if not match or not data or len(data) > MAX_LOG_PATCH_BYTES:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    if end < start or end - start + 1 != len(data):
        return None
    attempt_header = request.headers.get("build-attempt")
    attempt_number = int(attempt_header) if attempt_header and attempt_header.isdigit() else None
    return int(request.path_params["build_id"]), start, data, attempt_number


async def log_append(request: FastRequest) -> FastResponse | None:
    """`PATCH /api/v1/builds/<id>/log` at the right offset of the drone's current attempt — else the view answers.

    Two statements in one transaction: the agent CTEs with the attempt row
    locked, then the chunk insert with the new log size. A wrong offset (416
    with the stored size), a superseded attempt (409), an archived log, a log
    over its size limit or an empty patch all go to the view.
    """
    patch = _log_patch(request)
    params = agent_params(request.bearer_token(), timezone.now())
    if patch is None or params is None:
        return None
    build_id, start, data, attempt_number = patch
    pool = await async_db.pool()
    try:
        async with pool.connection() as connection, connection.transaction():
            cursor = await connection.execute(LOG_CONTEXT_SQL, {**params, "build": build_id})
            row = await cursor.fetchone()
            if row is None:
                raise _HandToDjango
            attempt_id, number, log_size, storage_key, state = row
            if (storage_key or start != log_size or (attempt_number is not None and attempt_number != number)
                    or log_size + len(data) > settings.SWARM_BUILD_LOG_MAX_BYTES):
                raise _HandToDjango
            size = log_size + len(data)
            await connection.execute(LOG_APPEND_SQL, {"attempt": attempt_id, "offset": start, "data": data,
                                                      "size": size})
    except _HandToDjango:
        return None
    await events.emit_log_appended_async(build_id=build_id, attempt_number=number, log_size=size)
    return FastResponse(None, status=202, headers=[(b"range", f"0-{size}".encode()),
                                                   (b"job-status", state.encode())])
