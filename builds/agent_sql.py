"""SQL of the agent requests answered on the event loop (builds/services.py: build_claim_async, build_log_append_async).

The context statements start with the agent CTEs: what every agent call does
first — check the drone token (touching its `last_used_at` as the bearer
authentication does) and renew the leases of the drone's running builds
(any agent call proves it alive) — and go on from the `token` CTE. The claim
itself is `builds.claiming.CLAIM_STATEMENT`, the one `build_claim` runs.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from swarm.core.authentication import LAST_USED_PRECISION
from swarm.core.tokens import split_prefix, token_digest

AGENT_CTES = """
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
"""

# The drone row locked (its claims are serial and its capacity holds, as in
# services.build_claim), what the claim needs from it, whether any queue has
# limits (then the view claims, step by step) and its canceling builds.
CLAIM_CONTEXT_SQL = AGENT_CTES + """
SELECT d.id, d.name, d.status, d.labels, d.capacity,
       EXISTS (SELECT 1 FROM builds_queue q
               WHERE q.max_concurrent IS NOT NULL OR q.tenant_rate_limit_per_minute IS NOT NULL) AS limited,
       ARRAY(SELECT b.id FROM builds_build b WHERE b.drone_id = d.id AND b.state = 'canceling' ORDER BY b.id)
FROM drones_drone d WHERE d.id = (SELECT drone_id FROM token)
FOR UPDATE OF d
"""

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
