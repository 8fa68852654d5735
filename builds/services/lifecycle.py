"""A build's life on the server's side: queued, told to idle drones, decided, canceled, retried.

`attempt_finish` is the one place an attempt is closed and its build decided
(done, or queued again as the next attempt); the agent's final report
(`builds.services.agent`) and the reaper (`builds.services.reaper`) both end
there. `build_event_record` writes the build's event rows for every module of
this package.

Lock order, everywhere: drone row → queue row → build row → attempt row.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from builds import events, tasks
from builds.choices import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    AttemptState,
    BuildState,
    TriggerKind,
)
from builds.config import (
    required_drone_labels,
    retry_allowed,
    validate_branch_name,
    validate_build_params,
    validate_commit_sha,
)
from builds.models import Build, BuildAttempt, BuildEvent, Job
from drones.models import Drone
from swarm.core.errors import ApiError, Conflict
from swarm.core.services import audit_record
from tenancy import quotas
from tenancy.quotas import tenant_lock_for_quota, tenant_quota_check

logger = logging.getLogger(__name__)


def build_event_record(*, build: Build, kind: str, actor: str = "", attempt_number: int | None = None,
                       **detail) -> None:
    """Append one event row to the build's history (`queued`, `claimed`, `finished`, ...)."""
    BuildEvent.objects.create(build=build, kind=kind, actor=str(actor)[:200], attempt_number=attempt_number,
                              detail=detail)


def task_enqueue_on_commit(*, task, object_id: int) -> None:
    """Queue `task(object_id)` once the transaction commits; a broker that is down is logged, not raised.

    The build is decided by then: the archive sweep picks up a log whose task
    was lost, and a lost notification must not turn a commit into an error.
    """

    def enqueue() -> None:
        try:
            task.delay(object_id)
        except Exception:  # noqa: BLE001 - the sweep picks up unarchived logs and the build is already decided
            logger.warning("could not enqueue %s(%s)", task.name, object_id, exc_info=True)

    transaction.on_commit(enqueue)


def build_trigger(
    *,
    job: Job,
    trigger: str,
    triggered_by: str = "",
    branch: str = "",
    commit_sha: str = "",
    params: dict | None = None,
    retry_of: Build | None = None,
) -> Build:
    """Queue a new build of `job`; idle drones that could take it are told at once."""
    if trigger not in TriggerKind.values:
        raise ApiError(f"unknown trigger {trigger!r}", field="trigger")
    if branch:
        validate_branch_name(branch, field="branch")
    if commit_sha:
        commit_sha = validate_commit_sha(commit_sha)
    if params is not None:
        params = validate_build_params(params)
    with transaction.atomic():
        locked = Job.objects.select_for_update().select_related("queue").get(pk=job.pk)
        if not locked.enabled:
            raise Conflict(f"Job {locked.name!r} is disabled.")
        if locked.tenant_id is not None:
            tenant = tenant_lock_for_quota(tenant_id=locked.tenant_id)
            queued = Build.objects.filter(job__tenant_id=locked.tenant_id, state=BuildState.PENDING).count()
            tenant_quota_check(tenant=tenant, quota=quotas.BUILDS_QUEUED, usage=queued)
        number = locked.next_build_number
        Job.objects.filter(pk=locked.pk).update(next_build_number=F("next_build_number") + 1)
        # A default branch stored before branch names were checked is checked before it reaches git;
        # none at all means the repository's own default (the drone clones its HEAD and reports the name).
        if not branch and locked.default_branch:
            branch = validate_branch_name(locked.default_branch, field="default_branch")
        config = locked.build_config
        now = timezone.now()
        build = Build.objects.create(
            job=locked,
            number=number,
            commit_sha=commit_sha or "",
            branch=branch,
            trigger=trigger,
            triggered_by=str(triggered_by)[:200],
            params=params or {},
            retry_of=retry_of,
            queue=locked.queue,
            queue_priority=locked.queue.priority,
            required_labels=required_drone_labels(config),
            timeout_seconds=int(config.get("timeout", 3600)),
            created_at=now,
            queued_at=now,
        )
        build_event_record(build=build, kind="queued", actor=triggered_by, trigger=trigger, branch=build.branch,
                           commit_sha=build.commit_sha)
        transaction.on_commit(lambda: build_nudge_idle_drones(build_id=build.pk))
        transaction.on_commit(lambda: events.emit_build_changed(build_id=build.pk, state=build.state,
                                                                 attempt_number=0))
    logger.info("build %s of job %s queued (%s by %s, branch %s)", build.pk, locked.name, trigger,
                triggered_by or "unknown", build.branch)
    return build


def build_nudge_idle_drones(*, build_id: int, limit: int = 10) -> int:
    """Tell idle drones with the labels and a free slot that work is waiting. Returns how many."""
    build = Build.objects.filter(pk=build_id, state=BuildState.PENDING).only("required_labels").first()
    if build is None:
        return 0
    candidates = (
        Drone.objects.with_labels(build.required_labels).taking_work()
        .annotate(held=Count("builds", filter=Q(builds__state__in=ACTIVE_STATES)))
        .filter(held__lt=F("capacity"))
        .order_by("held", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    for drone_id in candidates:
        events.tell_drone(drone_id, {"type": "build_available", "build_id": build_id})
        sent += 1
    return sent


def build_return_to_queue(*, build: Build, now) -> None:
    """Unassign a (row-locked) build and queue it again from `now`; idle drones are told once it commits.

    The caller saves the build, with whatever else it changes, and records why.
    """
    build.state = BuildState.PENDING
    build.drone_id = None
    build.queued_at = now
    build.assigned_at = None
    build.ack_deadline = None
    build.lease_expires_at = None
    build_id = build.pk
    transaction.on_commit(lambda: build_nudge_idle_drones(build_id=build_id))


def attempt_finish(*, build: Build, attempt: BuildAttempt, state: str, failure_reason: str = "",
                   exit_code: int | None = None, actor: str = "", detail: str = "",
                   allow_retry: bool = True) -> None:
    """Close an attempt and decide the build: done, or queued again as the next attempt.

    Called with the build and attempt rows locked.
    """
    now = timezone.now()
    attempt.state = {BuildState.SUCCESS: AttemptState.SUCCESS, BuildState.CANCELED: AttemptState.CANCELED}.get(
        state, AttemptState.FAILED)
    attempt.failure_reason = failure_reason
    attempt.exit_code = exit_code
    attempt.finished_at = now
    attempt.detail = detail[:500]
    attempt.save(update_fields=["state", "failure_reason", "exit_code", "finished_at", "detail"])
    retry = (
        allow_retry and state == BuildState.FAILED
        and retry_allowed(build.job.build_config, failure_reason=failure_reason, retries_used=build.retries_used)
    )
    attempt_id = attempt.pk
    task_enqueue_on_commit(task=tasks.archive_attempt_log, object_id=attempt_id)
    if retry:
        previous_drone = build.drone_id
        build_return_to_queue(build=build, now=now)
        build.retries_used += 1
        build.failure_reason = failure_reason
        build.exit_code = exit_code
        if previous_drone:
            build.avoid_drone_ids = sorted(set(build.avoid_drone_ids) | {previous_drone})
            build.avoid_until = now + timedelta(seconds=settings.SWARM_BUILD_RETRY_AVOID_SECONDS)
        build.save()
        build_event_record(build=build, kind="retry_queued", actor=actor, attempt_number=attempt.number,
                           failure_reason=failure_reason, detail=detail, retries_used=build.retries_used)
    else:
        build.state = state
        build.failure_reason = failure_reason
        build.exit_code = exit_code
        build.finished_at = now
        build.lease_expires_at = None
        build.ack_deadline = None
        build.save()
        build_event_record(build=build, kind="finished", actor=actor, attempt_number=attempt.number, state=state,
                           failure_reason=failure_reason, exit_code=exit_code, detail=detail)
        build_id = build.pk
        task_enqueue_on_commit(task=tasks.notify_build_finished, object_id=build_id)
    new_state, number = build.state, attempt.number
    transaction.on_commit(lambda: events.emit_build_changed(build_id=build.pk, state=new_state,
                                                            attempt_number=number))


def build_cancel(*, build: Build, actor="system") -> Build:
    """Cancel a build: a pending one at once; a held one goes to `canceling` and its drone is told."""
    with transaction.atomic():
        build = Build.objects.select_for_update().select_related("job").get(pk=build.pk)
        if build.state in TERMINAL_STATES:
            raise Conflict(f"Build {build} is already {build.state}.", code="already_finished")
        now = timezone.now()
        if build.state == BuildState.CANCELING:
            return build
        if build.state == BuildState.PENDING:
            build.state = BuildState.CANCELED
            build.finished_at = now
            build.cancel_requested_at = now
            build.save(update_fields=["state", "finished_at", "cancel_requested_at"])
            build_event_record(build=build, kind="canceled", actor=actor)
            build_id = build.pk
            task_enqueue_on_commit(task=tasks.notify_build_finished, object_id=build_id)
        else:
            build.state = BuildState.CANCELING
            build.cancel_requested_at = now
            build.save(update_fields=["state", "cancel_requested_at"])
            build_event_record(build=build, kind="cancel_requested", actor=actor, attempt_number=build.attempt_count)
            drone_id, build_id = build.drone_id, build.pk
            if drone_id:
                transaction.on_commit(lambda: events.tell_drone(drone_id, {
                    "type": "cancel_build", "build_id": build_id, "grace": settings.SWARM_BUILD_CANCEL_GRACE}))
        state, number = build.state, build.attempt_count
        transaction.on_commit(lambda: events.emit_build_changed(build_id=build.pk, state=state,
                                                                attempt_number=number))
    audit_record(actor=actor, action="build.cancel", obj=build, tenant_id=build.job.tenant_id)
    return build


def build_retry(*, build: Build, actor="system") -> Build:
    """Run a finished build again as a new build (trigger `retry`) of the same commit."""
    if build.state not in TERMINAL_STATES:
        raise Conflict(f"Build {build} is still {build.state}; only finished builds can be retried.",
                       code="not_finished")
    new_build = build_trigger(job=build.job, trigger=TriggerKind.RETRY, triggered_by=str(actor), branch=build.branch,
                              commit_sha=build.commit_sha, params=build.params, retry_of=build)
    audit_record(actor=actor, action="build.retry", obj=new_build, tenant_id=build.job.tenant_id,
                 detail={"retry_of": build.pk})
    return new_build
