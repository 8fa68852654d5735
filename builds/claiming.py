"""The claim as SQL: one statement that picks, assigns and returns a build, shared by both claim paths.

`builds.services.build_claim` runs it on Django's connection (after locking
the drone row) and `builds.fastpath.claim` on an async connection; both get
back the assigned build and its job in the same row and turn it into model
instances with `claimed_from_row()`, so the claim payload is built the same
way whichever path answered.
"""
from __future__ import annotations

import json
import re
from datetime import timedelta

from django.conf import settings
from django.db import models

from builds.choices import AttemptState
from builds.models import Build, BuildAttempt, Job
from builds.protocol import MAX_LOG_PATCH_BYTES
from builds.secrets import decrypt_mapping, decrypt_text

BUILD_FIELDS = [field for field in Build._meta.concrete_fields]
JOB_FIELDS = [field for field in Job._meta.concrete_fields]


def _columns(alias: str, fields) -> str:
    return ", ".join(f'{alias}."{field.column}"' for field in fields)


# The claim for a drone whose row the caller has locked and read: in its own
# statement after the lock, so its snapshot sees every earlier claim of the
# drone. It checks the drone's capacity, picks the best pending build the
# drone's labels allow with `SKIP LOCKED` (a build another drone is claiming
# right now is passed over), assigns it, adds the attempt and the event, and
# returns the attempt with the build and its job.
CLAIM_STATEMENT = f"""
WITH drone AS (
    SELECT %(drone)s::bigint AS id, %(drone_name)s::text AS name, %(capacity)s::integer AS capacity,
           %(labels)s::varchar[] AS labels
), held AS (
    SELECT count(*) AS n FROM builds_build
    WHERE drone_id = (SELECT id FROM drone) AND state IN ('assigned', 'running', 'canceling')
), candidate AS (
    SELECT b.id FROM builds_build b, drone
    WHERE b.state = 'pending'
      AND (SELECT n FROM held) < drone.capacity
      AND b.required_labels <@ drone.labels
      AND NOT (b.avoid_drone_ids @> ARRAY[drone.id]::bigint[] AND b.avoid_until IS NOT NULL
               AND b.avoid_until > %(now)s)
    ORDER BY b.queue_priority DESC, b.id
    FOR UPDATE OF b SKIP LOCKED
    LIMIT 1
), assigned AS (
    UPDATE builds_build b
    SET state = 'assigned', drone_id = (SELECT id FROM drone), attempt_count = b.attempt_count + 1,
        assigned_at = %(now)s, ack_deadline = %(ack_deadline)s, lease_expires_at = %(lease_until)s
    FROM candidate WHERE b.id = candidate.id
    RETURNING b.*
), attempt AS (
    INSERT INTO builds_buildattempt (build_id, number, drone_id, state, failure_reason, detail, assigned_at,
                                     log_size, log_checksum, log_checksum_reported, log_storage_key)
    SELECT id, attempt_count, (SELECT id FROM drone), 'assigned', '', '', %(now)s, 0, '', '', '' FROM assigned
    RETURNING id, build_id, number, drone_id
), event AS (
    INSERT INTO builds_buildevent (build_id, attempt_number, at, kind, actor, detail)
    SELECT assigned.id, assigned.attempt_count, %(now)s, 'claimed', 'drone:' || drone.id,
           jsonb_build_object('drone', drone.name)
    FROM assigned, drone
)
SELECT attempt.id, attempt.number, attempt.drone_id, {_columns("assigned", BUILD_FIELDS)},
       {_columns("job", JOB_FIELDS)}
FROM attempt JOIN assigned ON assigned.id = attempt.build_id JOIN builds_job job ON job.id = assigned.job_id
"""


def claim_params(*, drone_id: int, drone_name: str, capacity: int, labels, now, lease: int, ack_timeout: int) -> dict:
    """CLAIM_STATEMENT's parameters."""
    return {"drone": drone_id, "drone_name": drone_name, "capacity": max(int(capacity or 0), 0),
            "labels": list(labels), "now": now, "ack_deadline": now + timedelta(seconds=ack_timeout),
            "lease_until": now + timedelta(seconds=lease)}


def _instance(model, fields, values):
    decoded = [json.loads(value) if isinstance(field, models.JSONField) and isinstance(value, str) else value
               for field, value in zip(fields, values, strict=True)]
    return model.from_db("default", [field.attname for field in fields], decoded)


def claimed_from_row(row, *, now) -> tuple[Build, BuildAttempt]:
    """The assigned build (with its job) and its new attempt from the claim statement's row."""
    attempt_id, number, drone_id = row[0], row[1], row[2]
    build_values = row[3:3 + len(BUILD_FIELDS)]
    job_values = row[3 + len(BUILD_FIELDS):]
    build = _instance(Build, BUILD_FIELDS, build_values)
    build.job = _instance(Job, JOB_FIELDS, job_values)
    attempt = BuildAttempt(pk=attempt_id, build=build, number=number, drone_id=drone_id,
                           state=AttemptState.ASSIGNED, assigned_at=now)
    return build, attempt


def _build_env(build: Build, attempt_number: int) -> dict[str, str]:
    env = dict(build.job.build_config.get("env", {}))
    for name, value in (build.params or {}).items():
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(name)):
            env[str(name)] = str(value)
    env.update({
        "CI": "true",
        "SWARM_BUILD_ID": str(build.pk),
        "SWARM_BUILD_NUMBER": str(build.number),
        "SWARM_BUILD_ATTEMPT": str(attempt_number),
        "SWARM_JOB_NAME": build.job.name,
        "SWARM_BRANCH": build.branch,
        "SWARM_COMMIT_SHA": build.commit_sha,
    })
    return env


def claim_payload(result) -> dict:
    """What a drone needs to run a claimed build (the only place secrets leave in clear)."""
    build, attempt = result.build, result.attempt
    config = build.job.build_config
    return {
        "id": build.pk,
        "number": build.number,
        "attempt": attempt.number,
        "job": {"id": build.job_id, "name": build.job.name},
        "scm_url": build.job.scm_url,
        "scm_credential": decrypt_text(build.job.scm_credential_encrypted),
        "branch": build.branch,
        "commit_sha": build.commit_sha,
        "image": config.get("image", ""),
        "steps": list(config.get("steps", [])),
        "env": _build_env(build, attempt.number),
        "secrets": decrypt_mapping(build.job.secrets_encrypted),
        "artifacts": list(config.get("artifacts", [])),
        "timeout": build.timeout_seconds,
        "log_offset": attempt.log_size,
        "lease_seconds": result.lease_seconds,
        "lease_expires_at": build.lease_expires_at.isoformat() if build.lease_expires_at else None,
        "ack_timeout": result.ack_timeout,
        "update_interval": settings.SWARM_BUILD_UPDATE_INTERVAL,
        "cancel_grace": settings.SWARM_BUILD_CANCEL_GRACE,
        "max_log_patch_bytes": MAX_LOG_PATCH_BYTES,
    }
