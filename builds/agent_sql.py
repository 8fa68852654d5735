"""SQL of the agent requests answered on the event loop (builds/services/: build_claim_async, build_log_append_async).

Every agent call first checks the drone token (touching its `last_used_at`
as the bearer authentication does) and renews the leases of the drone's
running builds (any agent call proves it alive): the database function
`swarm_agent_touch` (migration builds/0003_claim_functions) does both and
returns the drone's id. Claims go through `swarm_agent_build_claims`, for a
group of drones at once (builds/claim_groups.py): touch, serialise the
drone's claims, and `swarm_build_claim`, the claim `build_claim` runs too. A
log append is `swarm_agent_log_append` (migration builds/0004): touch, lock
the attempt, store the chunk.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from swarm.core.authentication import LAST_USED_PRECISION
from swarm.core.tokens import split_prefix, token_digest

# One row per request of a group (`request_index`, 1-based): `answer` is `view`
# (the view must answer: unknown token, a drone that is gone, a queue with
# limits), `none` (nothing to claim) or `claimed` with the attempt, the build
# and its job; and the drone's canceling builds.
AGENT_CLAIMS_SQL = """
SELECT request_index, answer, canceling_build_ids, claimed_attempt_id, claimed_attempt_number, claimed_build,
       claimed_job
FROM swarm_agent_build_claims(%(prefixes)s::text[], %(digests)s::text[], %(free_slots)s::integer[],
                              %(labels)s::jsonb, %(now)s, %(used_before)s, %(lease_until)s, %(renew_before)s,
                              %(ack_deadline)s, %(no_work_statuses)s::text[])
"""

# One row: `answer` is `appended` with the attempt number, the log's new size
# and the build's state, or `view` (the view judges the request).
LOG_APPEND_SQL = """
SELECT answer, attempt_number, log_size, build_state
FROM swarm_agent_log_append(%(prefix)s, %(digest)s, %(now)s, %(used_before)s, %(lease_until)s, %(renew_before)s,
                            %(build)s, %(start)s, %(data)s, %(attempt)s, %(max_bytes)s)
"""


def token_parts(token: str) -> tuple[str, str] | None:
    """(prefix, digest) of a presented token, as the database keeps them; None when it is malformed."""
    prefix = split_prefix(token or "")
    if prefix is None:
        return None
    return prefix, token_digest(token)


def agent_times(now) -> dict:
    """The times `swarm_agent_touch` takes, for a request at `now`."""
    lease = settings.SWARM_BUILD_LEASE_SECONDS
    return {"now": now, "used_before": now - LAST_USED_PRECISION, "lease_until": now + timedelta(seconds=lease),
            "renew_before": now + timedelta(seconds=lease - 1)}


def agent_params(token: str, now) -> dict | None:
    """LOG_APPEND_SQL's token and time parameters for a presented token; None when it is malformed."""
    parts = token_parts(token)
    if parts is None:
        return None
    return {"prefix": parts[0], "digest": parts[1], **agent_times(now)}
