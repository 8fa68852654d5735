"""The calls of the agent protocol's database functions (their sources: builds/sql/*.sql).

Each agent operation has one implementation, a function both paths call:

* lease renewal — `swarm_drone_leases_renew` (LEASES_RENEW_SQL from
  `builds_renew_leases`, after Django's authentication; `swarm_agent_touch`
  calls it on the event loop after its token check, touching the token's
  `last_used_at` as the bearer authentication does);
* a drone's claim — `swarm_drone_build_claim` (DRONE_CLAIM_SQL from
  `build_claim`; `swarm_agent_build_claims`, AGENT_CLAIMS_SQL, touches and
  claims for a group of drones at once, builds/claim_groups.py);
* a drone's log append — `swarm_build_log_append` (BUILD_LOG_APPEND_SQL from
  `build_log_append`; `swarm_agent_log_append`, LOG_APPEND_SQL, touches and
  appends on the event loop).
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from swarm.core.authentication import LAST_USED_PRECISION
from swarm.core.tokens import split_prefix, token_digest

LEASES_RENEW_SQL = "SELECT swarm_drone_leases_renew(%(drone)s, %(lease_until)s, %(renew_before)s)"

# One row: `answer` (`limited`, `gone`, `none` or `claimed`), the drone's canceling builds, and the claim.
DRONE_CLAIM_SQL = """
SELECT answer, canceling_build_ids, claimed_attempt_id, claimed_attempt_number, claimed_build, claimed_job
FROM swarm_drone_build_claim(%(drone)s, %(free_slots)s, %(labels)s::varchar[], %(now)s, %(ack_deadline)s,
                             %(lease_until)s, %(no_work_statuses)s::text[])
"""

# One row: `answer` (builds/services/logs.py reads it), the attempt number, the log's size and the build's state.
# Positional: it runs on a plain psycopg cursor so the bytes are sent as binary (see build_log_append).
BUILD_LOG_APPEND_SQL = """
SELECT answer, attempt_number, log_size, build_state FROM swarm_build_log_append(%s, %s, %s, %s, %s, %s)
"""

# One row per request of a group (`request_index`, 1-based): `answer` is `view`
# (nothing written: an unknown token, a queue with limits; the view answers),
# else DRONE_CLAIM_SQL's answer with the attempt, the build and its job.
AGENT_CLAIMS_SQL = """
SELECT request_index, answer, canceling_build_ids, claimed_attempt_id, claimed_attempt_number, claimed_build,
       claimed_job
FROM swarm_agent_build_claims(%(prefixes)s::text[], %(digests)s::text[], %(free_slots)s::integer[],
                              %(labels)s::jsonb, %(now)s, %(used_before)s, %(lease_until)s, %(renew_before)s,
                              %(ack_deadline)s, %(no_work_statuses)s::text[])
"""

# One row, as BUILD_LOG_APPEND_SQL's, or `view` when the token is no live drone token (nothing written).
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
    """The times `swarm_agent_touch` and `swarm_drone_leases_renew` take, for a request at `now`."""
    lease = settings.SWARM_BUILD_LEASE_SECONDS
    return {"now": now, "used_before": now - LAST_USED_PRECISION, "lease_until": now + timedelta(seconds=lease),
            "renew_before": now + timedelta(seconds=lease - 1)}


def agent_params(token: str, now) -> dict | None:
    """LOG_APPEND_SQL's token and time parameters for a presented token; None when it is malformed."""
    parts = token_parts(token)
    if parts is None:
        return None
    return {"prefix": parts[0], "digest": parts[1], **agent_times(now)}
