"""The agent's calls about the builds it holds: lease renewal, the two-phase start, the final report.

Log appends are in `builds.services.logs`, artifact uploads in
`builds.services.artifacts` and the claim in `builds.services.claims`; every
call about one build starts with `builds.services.held.build_held_get`.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from builds import events
from builds.agent_sql import LEASES_RENEW_SQL, agent_times
from builds.choices import ACTIVE_STATES, AttemptState, BuildState, FailureReason
from builds.config import validate_branch_name
from builds.models import Build, BuildAttempt
from builds.services.held import build_held_get
from builds.services.lifecycle import attempt_finish, build_event_record
from builds.services.logs import LogRangeMismatch, attempt_log_checksum
from swarm.core.errors import ApiError


def builds_renew_leases(*, drone) -> int:
    """Extend the lease of every build the drone holds (any agent call proves it alive); returns how many.

    The database function `swarm_drone_leases_renew` (builds/sql/) is the one
    renewal: the event loop's agent calls run it inside `swarm_agent_touch`.
    """
    times = agent_times(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(LEASES_RENEW_SQL, {"drone": drone.pk, "lease_until": times["lease_until"],
                                          "renew_before": times["renew_before"]})
        return cursor.fetchone()[0]


def build_set_running(*, build_id: int, drone, attempt_number: int | None = None, commit_sha: str = "",
                      branch: str = "") -> Build:
    """Acknowledge an assigned build (two-phase start) or keep a running one alive.

    `commit_sha` and `branch` are what the drone checked out; they fill a
    build that was queued without them (a job building its repository's
    default branch), never change one that named them.
    """
    if branch:
        branch = validate_branch_name(branch, field="branch")
    build = build_held_get(build_id=build_id, drone=drone, attempt_number=attempt_number)
    with transaction.atomic():
        build = Build.objects.select_for_update().get(pk=build.pk)
        now = timezone.now()
        lease_until = now + timedelta(seconds=settings.SWARM_BUILD_LEASE_SECONDS)
        if build.state == BuildState.ASSIGNED:
            attempt = BuildAttempt.objects.select_for_update().get(build=build, number=build.attempt_count)
            build.state = BuildState.RUNNING
            build.started_at = build.started_at or now
            build.lease_expires_at = lease_until
            build.ack_deadline = None
            if commit_sha and not build.commit_sha:
                build.commit_sha = commit_sha.lower()[:64]
            if branch and not build.branch:
                build.branch = branch
            build.save(update_fields=["state", "started_at", "lease_expires_at", "ack_deadline", "commit_sha",
                                      "branch"])
            attempt.state = AttemptState.RUNNING
            attempt.started_at = now
            attempt.save(update_fields=["state", "started_at"])
            build_event_record(build=build, kind="started", actor=f"drone:{drone.pk}", attempt_number=attempt.number)
            transaction.on_commit(lambda: events.emit_build_changed(
                build_id=build.pk, state=BuildState.RUNNING, attempt_number=attempt.number))
        elif build.state in (BuildState.RUNNING, BuildState.CANCELING):
            build.lease_expires_at = lease_until
            fields = ["lease_expires_at"]
            if commit_sha and not build.commit_sha:
                build.commit_sha = commit_sha.lower()[:64]
                fields.append("commit_sha")
            if branch and not build.branch:
                build.branch = branch
                fields.append("branch")
            build.save(update_fields=fields)
    return build


def build_finish_from_agent(
    *,
    build_id: int,
    drone,
    state: str,
    exit_code: int | None = None,
    failure_reason: str = "",
    log_bytesize: int,
    log_checksum: str,
    attempt_number: int | None = None,
) -> Build:
    """The agent's final report for its attempt.

    `log_bytesize` must equal the stored size (else 416 with the server's
    Range: the agent sends the missing tail and reports again). The stored
    log's sha256 is recorded next to the reported one.
    """
    if state not in (BuildState.SUCCESS, BuildState.FAILED, BuildState.CANCELED):
        raise ApiError("state: must be running, success, failed or canceled", code="invalid", field="state")
    if failure_reason and failure_reason not in FailureReason.values:
        raise ApiError(f"failure_reason: unknown reason {failure_reason!r}", code="invalid", field="failure_reason")
    build = build_held_get(build_id=build_id, drone=drone, attempt_number=attempt_number)
    with transaction.atomic():
        build = Build.objects.select_for_update().select_related("job").get(pk=build.pk)
        attempt = BuildAttempt.objects.select_for_update().get(build=build, number=build.attempt_count)
        if build.state not in ACTIVE_STATES or attempt.state not in (AttemptState.ASSIGNED, AttemptState.RUNNING):
            return build  # already decided (reaped or canceled); the agent learns it from Job-Status
        if log_bytesize != attempt.log_size:
            raise LogRangeMismatch(attempt.log_size, f"The server holds {attempt.log_size} log bytes, "
                                                     f"not {log_bytesize}; send the rest and report again.")
        stored_checksum = attempt_log_checksum(attempt=attempt)
        attempt.log_checksum = stored_checksum
        attempt.log_checksum_reported = (log_checksum or "")[:80]
        attempt.save(update_fields=["log_checksum", "log_checksum_reported"])
        if log_checksum and log_checksum != stored_checksum:
            build_event_record(build=build, kind="log_checksum_mismatch", actor=f"drone:{drone.pk}",
                               attempt_number=attempt.number, reported=log_checksum, stored=stored_checksum)
        if build.state == BuildState.CANCELING:
            state, failure_reason = BuildState.CANCELED, ""
        elif state == BuildState.FAILED and not failure_reason:
            failure_reason = FailureReason.SCRIPT_FAILURE
        elif state != BuildState.FAILED:
            failure_reason = ""
        attempt_finish(build=build, attempt=attempt, state=state, failure_reason=failure_reason,
                       exit_code=exit_code, actor=f"drone:{drone.pk}")
    return build
