"""The reaper (beat): builds whose drone went silent, that nobody took, or that ran too long.

Each build is handled in its own transaction under `SKIP LOCKED`, its
condition checked again under the lock; a held build ends through
`builds.services.lifecycle.attempt_finish` like an agent's report would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from builds import events, tasks
from builds.choices import AttemptState, BuildState, FailureReason
from builds.models import Build, BuildAttempt
from builds.services.lifecycle import (
    attempt_finish,
    build_event_record,
    build_return_to_queue,
    task_enqueue_on_commit,
)


@dataclass
class ReapReport:
    """What one reaper pass did (ids per category)."""

    requeued_unacknowledged: list[int] = field(default_factory=list)
    lease_expired: list[int] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)


def builds_reap(*, now=None) -> ReapReport:
    """Fail or requeue builds whose drone stopped answering, that waited or ran too long.

    * assigned, not acknowledged before the ack deadline → back to the queue;
    * held with an expired lease → `runner_system_failure` (canceling → canceled);
    * pending longer than SWARM_BUILD_PENDING_LIMIT → `stuck_or_timeout_failure`;
    * running past its timeout plus SWARM_BUILD_TIMEOUT_GRACE → `job_execution_timeout`,
      and the drone is told to kill it.

    Each build is handled in its own transaction, locked with SKIP LOCKED, with
    its condition checked again under the lock.
    """
    now = now or timezone.now()
    report = ReapReport()
    unacked = Build.objects.filter(state=BuildState.ASSIGNED, ack_deadline__lt=now).values_list("pk", flat=True)
    for build_id in list(unacked[:500]):
        if _reap_one(build_id, now, "unacknowledged"):
            report.requeued_unacknowledged.append(build_id)
    expired = Build.objects.filter(
        state__in=(BuildState.RUNNING, BuildState.CANCELING), lease_expires_at__lt=now
    ).values_list("pk", flat=True)
    for build_id in list(expired[:500]):
        if _reap_one(build_id, now, "lease"):
            report.lease_expired.append(build_id)
    pending_cutoff = now - timedelta(seconds=settings.SWARM_BUILD_PENDING_LIMIT)
    stuck = Build.objects.filter(state=BuildState.PENDING, queued_at__lt=pending_cutoff).values_list("pk", flat=True)
    for build_id in list(stuck[:500]):
        if _reap_one(build_id, now, "stuck"):
            report.stuck.append(build_id)
    running = Build.objects.filter(state=BuildState.RUNNING, started_at__isnull=False).values_list(
        "pk", "started_at", "timeout_seconds")
    grace = settings.SWARM_BUILD_TIMEOUT_GRACE
    for build_id, started_at, timeout in list(running[:2000]):
        if started_at + timedelta(seconds=timeout + grace) < now and _reap_one(build_id, now, "timeout"):
            report.timed_out.append(build_id)
    return report


def _reap_one(build_id: int, now, kind: str) -> bool:
    with transaction.atomic():
        build = (Build.objects.select_for_update(skip_locked=True).select_related("job")
                 .filter(pk=build_id).first())
        if build is None:
            return False
        attempt = None
        if build.attempt_count:
            attempt = BuildAttempt.objects.select_for_update().filter(build=build, number=build.attempt_count).first()
        if kind == "unacknowledged":
            if build.state != BuildState.ASSIGNED or not build.ack_deadline or build.ack_deadline >= now:
                return False
            # The drone took it but never started it: the build goes back to the
            # queue without spending a retry; the attempt row stays as the record.
            if attempt is not None:
                attempt.state = AttemptState.FAILED
                attempt.failure_reason = FailureReason.RUNNER_SYSTEM_FAILURE
                attempt.detail = "not acknowledged before the ack timeout; requeued"
                attempt.finished_at = now
                attempt.save(update_fields=["state", "failure_reason", "detail", "finished_at"])
            build_return_to_queue(build=build, now=now)
            build.save()
            build_event_record(build=build, kind="requeued_unacknowledged", actor="reaper",
                               attempt_number=attempt.number if attempt else None)
            return True
        if kind == "lease":
            if build.state not in (BuildState.RUNNING, BuildState.CANCELING) or not build.lease_expires_at \
                    or build.lease_expires_at >= now or attempt is None:
                return False
            if build.state == BuildState.CANCELING:
                attempt_finish(build=build, attempt=attempt, state=BuildState.CANCELED, actor="reaper",
                               detail="lease expired while canceling")
            else:
                attempt_finish(build=build, attempt=attempt, state=BuildState.FAILED,
                               failure_reason=FailureReason.RUNNER_SYSTEM_FAILURE, actor="reaper",
                               detail=f"lease expired at {build.lease_expires_at.isoformat()}")
            return True
        if kind == "stuck":
            cutoff = now - timedelta(seconds=settings.SWARM_BUILD_PENDING_LIMIT)
            if build.state != BuildState.PENDING or build.queued_at >= cutoff:
                return False
            build.state = BuildState.FAILED
            build.failure_reason = FailureReason.STUCK_OR_TIMEOUT_FAILURE
            build.finished_at = now
            build.save(update_fields=["state", "failure_reason", "finished_at"])
            build_event_record(build=build, kind="finished", actor="reaper", state=build.state,
                               failure_reason=build.failure_reason, detail="no drone took the build in time")
            build_pk = build.pk
            task_enqueue_on_commit(task=tasks.notify_build_finished, object_id=build_pk)
            transaction.on_commit(lambda: events.emit_build_changed(build_id=build_pk, state=BuildState.FAILED,
                                                                    attempt_number=build.attempt_count))
            return True
        if kind == "timeout":
            deadline = (build.started_at or now) + timedelta(
                seconds=build.timeout_seconds + settings.SWARM_BUILD_TIMEOUT_GRACE)
            if build.state != BuildState.RUNNING or deadline >= now or attempt is None:
                return False
            drone_id, build_pk = build.drone_id, build.pk
            attempt_finish(build=build, attempt=attempt, state=BuildState.FAILED,
                           failure_reason=FailureReason.JOB_EXECUTION_TIMEOUT, actor="reaper",
                           detail=f"ran longer than {build.timeout_seconds}s", allow_retry=False)
            if drone_id:
                transaction.on_commit(lambda: events.tell_drone(drone_id, {
                    "type": "cancel_build", "build_id": build_pk, "reason": "job_execution_timeout",
                    "grace": settings.SWARM_BUILD_CANCEL_GRACE}))
            return True
    return False
