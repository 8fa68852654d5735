"""Writes of the builds app: one keyword-only `<entity>_<action>()` per use case.

The API views, the admin actions, the Celery tasks and the reaper all call
these functions; nothing else changes a build's state. One module per seam:

* `jobs`       — the default queues; job create, update, delete.
* `lifecycle`  — trigger, nudge idle drones, close an attempt and decide the build, cancel, retry.
* `claims`     — a drone claims a build (Django's connection and the event loop), queue limits.
* `held`       — which drone holds a build: the check every agent call about a build starts with.
* `agent`      — the agent's other calls: lease renewal, the two-phase start, the final report.
* `logs`       — log appends (sync and on the event loop), reading, checksum, archiving.
* `artifacts`  — announce, upload or verify, mark stored.
* `reaper`     — beat's pass over builds whose drone went silent, that waited or ran too long.
* `webhooks`   — forge push webhooks: verification, delivery recording, processing.

This package re-exports the public names, so callers write
`from builds import services` and `services.build_claim(...)`; modules of
the package import from their sibling modules, never from here.

Lock order, everywhere: drone row → queue row → build row → attempt row.
"""
from builds.services.agent import build_finish_from_agent, build_set_running, builds_renew_leases
from builds.services.artifacts import (
    artifact_announce,
    artifact_storage_key,
    artifact_store_stream,
    artifact_verify_stored,
)
from builds.services.claims import (
    AsyncClaim,
    ClaimResult,
    ClaimUnanswerable,
    build_claim,
    build_claim_async,
    build_fail_undecryptable_claim,
)
from builds.services.held import DroneRef
from builds.services.jobs import DEFAULT_QUEUES, job_create, job_delete, job_update, queues_ensure_defaults
from builds.services.lifecycle import build_cancel, build_nudge_idle_drones, build_retry, build_trigger
from builds.services.logs import (
    LogAppended,
    LogRangeMismatch,
    attempt_archive_log,
    attempt_log_checksum,
    attempt_log_iter,
    attempt_log_storage_key,
    attempts_archive_pending,
    build_log_append,
    build_log_append_async,
)
from builds.services.reaper import ReapReport, builds_reap
from builds.services.webhooks import (
    PushEvent,
    WebhookUnauthorized,
    parse_push_events,
    webhook_delivery_process,
    webhook_receive,
)

__all__ = [
    "DEFAULT_QUEUES",
    "AsyncClaim",
    "ClaimResult",
    "ClaimUnanswerable",
    "DroneRef",
    "LogAppended",
    "LogRangeMismatch",
    "PushEvent",
    "ReapReport",
    "WebhookUnauthorized",
    "artifact_announce",
    "artifact_storage_key",
    "artifact_store_stream",
    "artifact_verify_stored",
    "attempt_archive_log",
    "attempt_log_checksum",
    "attempt_log_iter",
    "attempt_log_storage_key",
    "attempts_archive_pending",
    "build_cancel",
    "build_claim",
    "build_claim_async",
    "build_fail_undecryptable_claim",
    "build_finish_from_agent",
    "build_log_append",
    "build_log_append_async",
    "build_nudge_idle_drones",
    "build_retry",
    "build_set_running",
    "build_trigger",
    "builds_reap",
    "builds_renew_leases",
    "job_create",
    "job_delete",
    "job_update",
    "parse_push_events",
    "queues_ensure_defaults",
    "webhook_delivery_process",
    "webhook_receive",
]
