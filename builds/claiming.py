"""What a claim returns, and the payload a drone gets for it, the same whichever path claimed.

`swarm_drone_build_claim` (builds/sql/) is the claim of one drone: it takes
the drone's claim lock, reads the drone, and calls `swarm_build_claim`,
which checks the drone's capacity, picks the best pending build the drone's
labels allow with `SKIP LOCKED`, assigns it, adds the attempt and the
`claimed` event, and returns the attempt with what the payload needs of the
build and its job as jsonb. `builds.services.build_claim` calls it on
Django's connection; `builds.fastpath.claim` goes through
`swarm_agent_build_claims` (builds/claim_groups.py), which checks each token
and calls it, for a group of drones in one round trip. Both read the row
with `claimed_from_row()` and build the payload from it with
`claim_payload()`.

A job secret no key decrypts (swarm/core/secret_box.py) is never handed out
as an empty credential: `claim_payload()` raises SecretUndecryptable, and the
caller fails the just-claimed build with `builds.services.build_fail_undecryptable_claim()`
and answers the drone 409 `secret_undecryptable`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from builds.models import Build, BuildAttempt, Job
from builds.protocol import MAX_LOG_PATCH_BYTES
from swarm.core.errors import Conflict
from swarm.core.secret_box import decrypt_mapping, decrypt_text, where

#: What the claim returns of the build and of its job: what the claim payload needs.
BUILD_COLUMNS = ("id", "number", "state", "branch", "commit_sha", "params", "timeout_seconds", "lease_expires_at")
JOB_COLUMNS = ("id", "name", "scm_url", "scm_credential_encrypted", "secrets_encrypted", "build_config")


@dataclass(frozen=True)
class ClaimedRow:
    """A claimed build as the claim returned it: the new attempt, and BUILD_COLUMNS and JOB_COLUMNS."""

    attempt_id: int
    attempt_number: int
    build: dict
    job: dict


def claimed_from_row(row) -> ClaimedRow:
    """A claim row (attempt id, attempt number, build jsonb, job jsonb) as a ClaimedRow."""
    attempt_id, number, build, job = row
    return ClaimedRow(attempt_id=attempt_id, attempt_number=number, build=_json(build), job=_json(job))


def claimed_from_instances(build: Build, attempt: BuildAttempt) -> ClaimedRow:
    """A ClaimedRow for a claim made step by step with the ORM."""
    return ClaimedRow(attempt_id=attempt.pk, attempt_number=attempt.number,
                      build={column: getattr(build, column) for column in BUILD_COLUMNS},
                      job={column: getattr(build.job, column) for column in JOB_COLUMNS})


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def _timestamp(value):
    """A timestamptz from jsonb text (or as loaded), in UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC) if value is not None else None


def _build_env(build: dict, job: dict, attempt_number: int) -> dict[str, str]:
    env = dict(job["build_config"].get("env", {}))
    for name, value in (build["params"] or {}).items():
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(name)):
            env[str(name)] = str(value)
    env.update({
        "CI": "true",
        "SWARM_BUILD_ID": str(build["id"]),
        "SWARM_BUILD_NUMBER": str(build["number"]),
        "SWARM_BUILD_ATTEMPT": str(attempt_number),
        "SWARM_JOB_NAME": job["name"],
        "SWARM_BRANCH": build["branch"],
        "SWARM_COMMIT_SHA": build["commit_sha"],
    })
    return env


def claim_payload(result) -> dict:
    """What a drone needs to run a claimed build (the only place secrets leave in clear).

    Raises SecretUndecryptable when a job secret cannot be decrypted: the
    caller then fails the build (`build_fail_undecryptable_claim`).
    """
    claimed = result.claimed
    build, job = claimed.build, claimed.job
    config = job["build_config"]
    scm_credential = decrypt_text(job["scm_credential_encrypted"],
                                  where=where(Job, job["id"], "scm_credential_encrypted"))
    secrets = decrypt_mapping(job["secrets_encrypted"], where=where(Job, job["id"], "secrets_encrypted"))
    lease_expires_at = _timestamp(build["lease_expires_at"])
    return {
        "id": build["id"],
        "number": build["number"],
        "attempt": claimed.attempt_number,
        "job": {"id": job["id"], "name": job["name"]},
        "scm_url": job["scm_url"],
        "scm_credential": scm_credential,
        "branch": build["branch"],
        "commit_sha": build["commit_sha"],
        "image": config.get("image", ""),
        "steps": list(config.get("steps", [])),
        "env": _build_env(build, job, claimed.attempt_number),
        "secrets": secrets,
        "artifacts": list(config.get("artifacts", [])),
        "timeout": build["timeout_seconds"],
        "log_offset": 0,
        "lease_seconds": result.lease_seconds,
        "lease_expires_at": lease_expires_at.isoformat() if lease_expires_at else None,
        "ack_timeout": result.ack_timeout,
        "update_interval": settings.SWARM_BUILD_UPDATE_INTERVAL,
        "cancel_grace": settings.SWARM_BUILD_CANCEL_GRACE,
        "max_log_patch_bytes": MAX_LOG_PATCH_BYTES,
    }


class ClaimSecretUndecryptable(Conflict):
    """The drone's claim found a build whose job secrets no key decrypts: the build failed instead (409)."""

    code = "secret_undecryptable"
