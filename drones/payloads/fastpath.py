"""Deploy reports answered on the server's event loop (see swarm/core/fast_routes.py).

During a rollout every drone reports its deploy (`POST /payloads/agent/report`,
usually once: the agent coalesces its states), so the report is as hot as a
heartbeat for the length of a wave. Through the view it costs DRF, the token
lookup and half a dozen round trips; here it is one transaction of four
statements on the async connection: find and lock the drone's own target
through its token, apply the states with the *same* rules as the view
(`services.payload_report_apply`), write the target, the rollout's progress
time and the event rows, upsert the reported hash. The wake and the live
notice follow the commit.

The body is parsed by the view's parser (drones/payloads/protocol.py). Anything
unusual — a body the parser refuses, a body that is not JSON, a token that is
no live drone token (`swarm_drone_token_check`), another drone's target — is
handed to the view before anything is written (it gives the precise
400/401/403/404/415).
"""
from __future__ import annotations

import asyncio

from django.utils import timezone

from drones.payloads import services
from drones.payloads.events import EventBatch, emit_rollout_changed_async
from drones.payloads.models import PayloadEvent, PayloadVersion, Rollout, RolloutTarget
from drones.payloads.protocol import agent_report_parse
from drones.payloads.wake import rollout_wake_now
from swarm.core import async_db
from swarm.core.fast_routes import FastRequest, FastResponse
from swarm.core.tokens import split_prefix, token_digest

LOCK_TARGET_SQL = f"""
SELECT target.id, target.state, target.reason, target.healthy_at, target.revert_state, target.rollout_id,
       target.drone_id, rollout.min_healthy_time, version.payload_type_id
FROM {RolloutTarget._meta.db_table} AS target
JOIN {Rollout._meta.db_table} AS rollout ON rollout.id = target.rollout_id
JOIN {PayloadVersion._meta.db_table} AS version ON version.id = target.payload_version_id
WHERE target.id = %(target)s
  AND target.drone_id = swarm_drone_token_check(%(prefix)s, %(digest)s, %(now)s)
FOR UPDATE OF target
"""

UPDATE_TARGET_SQL = f"""
UPDATE {RolloutTarget._meta.db_table}
SET state = %(state)s, reason = %(reason)s, healthy_at = %(healthy_at)s, revert_state = %(revert_state)s,
    state_changed_at = %(now)s
WHERE id = %(id)s
"""

PROGRESS_SQL = f"UPDATE {Rollout._meta.db_table} SET last_progress_at = %(now)s WHERE id = %(rollout)s"

EVENT_SQL = f"""
INSERT INTO {PayloadEvent._meta.db_table}
    (kind, rollout_id, target_id, drone_id, payload_type_id, from_state, to_state, detail, actor, at)
VALUES (%(kind)s, %(rollout_id)s, %(target_id)s, %(drone_id)s, NULL, %(from_state)s, %(to_state)s, %(detail)s,
        '', %(at)s)
"""


async def report(request: FastRequest) -> FastResponse | None:
    """`POST /api/v1/payloads/agent/report`: 204 — or None for the view to answer."""
    token = request.bearer_token()
    prefix = split_prefix(token or "")
    if prefix is None:
        return None  # the view gives the 401 with its challenge
    body = agent_report_parse(request.json())  # a refusal (ApiError) goes to the view, which answers it the same
    now = timezone.now()
    pool = await async_db.pool()
    async with pool.connection() as connection:
        async with connection.transaction():
            cursor = await connection.execute(LOCK_TARGET_SQL, {"target": body.target_id, "prefix": prefix,
                                                                "digest": token_digest(token), "now": now})
            row = await cursor.fetchone()
            if row is None:
                return None  # nothing written: the view says 401/403/404
            target_id, state, reason, healthy_at, revert_state, rollout_id, drone_id, min_healthy_time, type_id = row
            target = RolloutTarget(pk=target_id, state=state, reason=reason, healthy_at=healthy_at,
                                   revert_state=revert_state, rollout_id=rollout_id, drone_id=drone_id)
            rollout = Rollout(pk=rollout_id, min_healthy_time=min_healthy_time)
            batch = EventBatch()
            changed = services.payload_report_apply(target=target, rollout=rollout, action=body.action,
                                                    states=body.states, batch=batch, now=now)
            if changed:
                await connection.execute(UPDATE_TARGET_SQL, {
                    "id": target_id, "state": target.state, "reason": target.reason, "healthy_at": target.healthy_at,
                    "revert_state": target.revert_state, "now": now})
                await connection.execute(PROGRESS_SQL, {"now": now, "rollout": rollout_id})
                async with connection.cursor() as events:
                    await events.executemany(EVENT_SQL, [{
                        "kind": event.kind, "rollout_id": rollout_id, "target_id": target_id, "drone_id": drone_id,
                        "from_state": event.from_state, "to_state": event.to_state, "detail": event.detail,
                        "at": event.at} for event in batch.rows])
            if body.current_sha256:
                await connection.execute(services.REPORTED_HASH_SQL, {
                    "drone": drone_id, "type": type_id, "sha256": body.current_sha256, "now": now})
    request.written = True  # committed: from here on a failure is a 500, never a second report by the view
    if changed:
        await asyncio.get_running_loop().run_in_executor(None, rollout_wake_now, rollout_id)
        await emit_rollout_changed_async(rollout_id=rollout_id)
    return FastResponse(None, status=204)
