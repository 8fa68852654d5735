"""Claiming: a drone asks for work and is handed the best pending build it can run, or nothing.

`build_claim` is the claim on Django's connection (the view); `build_claim_async`
the same claim on the event loop, sent to the database in a group with the
claims that arrive with it (builds/claim_groups.py). Queues that cap
concurrency or tenant start rates take the step-by-step path
(`_claim_with_queue_limits`).

Lock order, everywhere: drone row → queue row → build row → attempt row.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from builds import claim_groups, events
from builds.agent_sql import DRONE_CLAIM_SQL, token_parts
from builds.choices import ACTIVE_STATES, NO_NEW_WORK_STATUSES, AttemptState, BuildState, FailureReason
from builds.claiming import ClaimedRow, ClaimSecretUndecryptable, claimed_from_instances, claimed_from_row
from builds.models import Build, BuildAttempt, Queue
from builds.services.lifecycle import attempt_finish, build_event_record
from drones.models import Drone
from swarm.core.errors import ApiError, NotFound
from swarm.core.fast_routes import NothingWritten
from swarm.core.secret_box import SecretUndecryptable

logger = logging.getLogger(__name__)


@dataclass
class ClaimResult:
    """A build handed to a drone, with the attempt it runs as (`claimed`: what the claim returned)."""

    claimed: ClaimedRow
    lease_seconds: int = 0
    ack_timeout: int = 0
    seconds: float = 0.0

    @property
    def state(self) -> str:
        return self.claimed.build["state"]

    @cached_property
    def build(self) -> Build:
        """The claimed build and its job, read from the database."""
        return Build.objects.select_related("job").get(pk=self.claimed.build["id"])

    @cached_property
    def attempt(self) -> BuildAttempt:
        """The claim's attempt, read from the database."""
        return BuildAttempt.objects.get(pk=self.claimed.attempt_id)


@dataclass
class _QueueLimits:
    full_queue_ids: set[int] = field(default_factory=set)
    limited_queue_ids: set[int] = field(default_factory=set)
    rate_blocked: list[tuple[int, int | None]] = field(default_factory=list)
    rate_limited: bool = False


def _queue_limits(now) -> _QueueLimits:
    """Queues at their concurrency cap and (queue, tenant) pairs over their start rate."""
    limits = _QueueLimits()
    limited = list(
        Queue.objects.filter(Q(max_concurrent__isnull=False) | Q(tenant_rate_limit_per_minute__isnull=False))
        .values_list("pk", "max_concurrent", "tenant_rate_limit_per_minute")
    )
    if not limited:
        return limits
    capped = [(pk, cap) for pk, cap, _ in limited if cap is not None]
    rated = {pk: rate for pk, _, rate in limited if rate is not None}
    limits.rate_limited = bool(rated)
    if capped:
        limits.limited_queue_ids = {pk for pk, _ in capped}
        held = dict(
            Build.objects.filter(queue_id__in=limits.limited_queue_ids, state__in=ACTIVE_STATES)
            .values_list("queue_id").annotate(n=Count("id")).values_list("queue_id", "n")
        )
        limits.full_queue_ids = {pk for pk, cap in capped if held.get(pk, 0) >= cap}
    if rated:
        recent = (
            BuildAttempt.objects.filter(build__queue_id__in=rated, assigned_at__gte=now - timedelta(minutes=1))
            .values_list("build__queue_id", "build__job__tenant_id").annotate(n=Count("id"))
        )
        limits.rate_blocked = [(queue_id, tenant_id) for queue_id, tenant_id, n in recent if n >= rated[queue_id]]
    return limits


def build_claim(*, drone, free_slots: int = 1, labels: list[str] | None = None) -> ClaimResult | None:
    """Hand the best pending build this drone can run to it, or None.

    One transaction, one call of `swarm_drone_build_claim` (builds/sql/),
    the claim the event loop runs too: serialise this drone's claims (a
    transaction advisory lock, so its capacity holds), pick the
    highest-priority pending build whose labels are a subset of the drone's
    with `FOR UPDATE SKIP LOCKED` (a build another drone is claiming right now
    is skipped, never waited for nor handed out twice), and assign it as a new
    numbered attempt. When a queue caps concurrency or tenant start rates the
    function claims nothing and the claim is made step by step here
    (`_claim_with_queue_limits`).
    """
    started = time.perf_counter()
    lease = settings.SWARM_BUILD_LEASE_SECONDS
    ack_timeout = settings.SWARM_BUILD_ACK_TIMEOUT
    with transaction.atomic():
        now = timezone.now()
        params = {"drone": drone.pk, "free_slots": free_slots, "labels": list(labels or []), "now": now,
                  "ack_deadline": now + timedelta(seconds=ack_timeout), "lease_until": now + timedelta(seconds=lease),
                  "no_work_statuses": list(NO_NEW_WORK_STATUSES)}
        with connection.cursor() as cursor:
            cursor.execute(DRONE_CLAIM_SQL, params)
            answer, _, *claimed_columns = cursor.fetchone()
        if answer == "gone":
            raise NotFound("This drone no longer exists.")
        if answer == "limited":
            claimed = _claim_locked_with_queue_limits(drone=drone, free_slots=free_slots, labels=labels, now=now,
                                                      lease=lease, ack_timeout=ack_timeout)
        elif answer == "claimed":
            claimed = claimed_from_row(claimed_columns)
        else:
            claimed = None
        if claimed is None:
            return None
        build_id, attempt_number = claimed.build["id"], claimed.attempt_number
        transaction.on_commit(lambda: events.emit_build_changed(
            build_id=build_id, state=BuildState.ASSIGNED, attempt_number=attempt_number))
    return ClaimResult(claimed=claimed, lease_seconds=lease, ack_timeout=ack_timeout,
                       seconds=time.perf_counter() - started)


def _claim_locked_with_queue_limits(*, drone, free_slots: int, labels, now, lease: int,
                                    ack_timeout: int) -> ClaimedRow | None:
    """The claim when some queue has limits: the drone's claim lock, its row, then `_claim_with_queue_limits`."""
    if free_slots < 1:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT swarm_lock_drone_claims(%s)", [drone.pk])
    locked_drone = Drone.objects.only("pk", "name", "status", "labels", "capacity").filter(pk=drone.pk).first()
    if locked_drone is None:
        raise NotFound("This drone no longer exists.")
    if locked_drone.status in NO_NEW_WORK_STATUSES:
        return None
    return _claim_with_queue_limits(drone=locked_drone, labels=list(locked_drone.labels or labels or []), now=now,
                                    lease=lease, ack_timeout=ack_timeout, limits=_queue_limits(now))


def _claim_with_queue_limits(*, drone, labels, now, lease: int, ack_timeout: int,
                             limits: _QueueLimits) -> ClaimedRow | None:
    """The claim step by step, for when some queue caps concurrency or tenant start rates.

    The one claim not made by `swarm_drone_build_claim`: the caps are
    counted under the queue row's lock, candidate by candidate. The event
    loop never takes this path (it hands such claims to the view before
    writing anything).
    """
    held = Build.objects.filter(drone_id=drone.pk, state__in=ACTIVE_STATES).count()
    if held >= max(int(drone.capacity or 0), 0):
        return None
    skipped_queue_ids: set[int] = set(limits.full_queue_ids)
    for _ in range(5):
        candidates = (
            Build.objects.filter(state=BuildState.PENDING, required_labels__contained_by=labels)
            .exclude(Q(avoid_drone_ids__contains=[drone.pk]) & Q(avoid_until__gt=now))
            .order_by("-queue_priority", "id")
        )
        if skipped_queue_ids:
            candidates = candidates.exclude(queue_id__in=skipped_queue_ids)
        for queue_id, tenant_id in limits.rate_blocked:
            candidates = candidates.exclude(Q(queue_id=queue_id) & Q(job__tenant_id=tenant_id))
        build = candidates.select_for_update(skip_locked=True, of=("self",)).first()
        if build is None:
            return None
        if build.queue_id in limits.limited_queue_ids:
            # A capped queue: serialise its claims on the queue row and recount under the lock.
            queue = Queue.objects.select_for_update().get(pk=build.queue_id)
            held_in_queue = Build.objects.filter(queue_id=queue.pk, state__in=ACTIVE_STATES).count()
            if held_in_queue >= (queue.max_concurrent or 0):
                skipped_queue_ids.add(queue.pk)
                continue
        break
    else:
        return None
    attempt_number = build.attempt_count + 1
    attempt = BuildAttempt.objects.create(build=build, number=attempt_number, drone_id=drone.pk,
                                         state=AttemptState.ASSIGNED, assigned_at=now)
    build.state = BuildState.ASSIGNED
    build.drone_id = drone.pk
    build.attempt_count = attempt_number
    build.assigned_at = now
    build.ack_deadline = now + timedelta(seconds=ack_timeout)
    build.lease_expires_at = now + timedelta(seconds=lease)
    build.save(update_fields=["state", "drone_id", "attempt_count", "assigned_at", "ack_deadline",
                              "lease_expires_at"])
    build_event_record(build=build, kind="claimed", actor=f"drone:{drone.pk}", attempt_number=attempt_number,
                       drone=drone.name)
    return claimed_from_instances(build, attempt)


class ClaimLimitedMeanwhile(NothingWritten):
    """The group found no queue limits, the drone's claim did: nothing but the idempotent touch was written."""


class ClaimUnanswerable(ApiError):
    """A build was assigned but could not be read back: the drone must ask again (it returns after the ack timeout)."""

    status_code = 500
    code = "server_error"


@dataclass
class AsyncClaim:
    """What `build_claim_async` did: the claim (None: nothing for this drone) and the drone's canceling builds."""

    result: ClaimResult | None
    canceling_build_ids: list[int]


async def build_claim_async(*, token: str, free_slots: int, labels: list[str] | None) -> AsyncClaim | None:
    """`build_claim` for a drone token on the event loop; None when the view must answer.

    The claim goes to the database in a group with the claims that arrive
    with it (builds/claim_groups.py): one call checks each token, renews the
    drone's leases, serialises its claims and runs the claim `build_claim`
    runs. Returns None — nothing was written — for an unknown or foreign
    token and when a queue has limits (the view answers those); raises
    NotFound for a drone that is gone.
    """
    started = time.perf_counter()
    parts = token_parts(token)
    if parts is None:
        return None
    answer = await claim_groups.claim(claim_groups.ClaimRequest(prefix=parts[0], digest=parts[1],
                                                                free_slots=free_slots, labels=labels or []))
    if answer.answer == "view":
        return None
    if answer.answer == "gone":
        raise NotFound("This drone no longer exists.")
    if answer.answer == "limited":
        # A queue got limits between the group's check and this drone's claim: only the token's touch
        # and the lease renewal were written, which the view repeats to the same effect.
        raise ClaimLimitedMeanwhile("a queue got limits while the group was claiming")
    if answer.answer != "claimed":
        return AsyncClaim(result=None, canceling_build_ids=answer.canceling_build_ids)
    try:
        row = claimed_from_row(answer.claimed)
    except Exception as error:  # noqa: BLE001 - assigned already: the view must not claim a second build
        logger.exception("claimed build could not be read back")
        raise ClaimUnanswerable("The claim could not be answered; ask again.") from error
    await events.emit_build_changed_async(build_id=row.build["id"], state=BuildState.ASSIGNED,
                                          attempt_number=row.attempt_number)
    result = ClaimResult(claimed=row, lease_seconds=settings.SWARM_BUILD_LEASE_SECONDS,
                         ack_timeout=settings.SWARM_BUILD_ACK_TIMEOUT, seconds=time.perf_counter() - started)
    return AsyncClaim(result=result, canceling_build_ids=answer.canceling_build_ids)


def build_fail_undecryptable_claim(*, claimed: ClaimedRow, error: SecretUndecryptable) -> ClaimSecretUndecryptable:
    """Fail a build just claimed whose job secrets cannot be decrypted; returns the error to answer the drone with.

    The drone never receives the build: it would clone without its
    credential or run without its secrets. The attempt and the build fail
    with `runner_system_failure` and no retry (another attempt fails the same
    way until an operator restores the key or re-enters the secret); a
    `secret_undecryptable` event and the `finished` event name the field and
    what to do. The job owner is notified like for any failed build.
    """
    build_id, attempt_number = claimed.build["id"], claimed.attempt_number
    detail = str(error)
    with transaction.atomic():
        build = Build.objects.select_for_update().select_related("job").filter(pk=build_id).first()
        attempt = BuildAttempt.objects.select_for_update().filter(build_id=build_id, number=attempt_number).first()
        still_this_claim = (build is not None and attempt is not None and build.attempt_count == attempt_number
                            and build.state in ACTIVE_STATES and attempt.state == AttemptState.ASSIGNED)
        if still_this_claim:
            # The services' own helpers, so this failure closes the attempt and the build (events,
            # notification, live update) exactly as every other one does.
            state = BuildState.CANCELED if build.state == BuildState.CANCELING else BuildState.FAILED
            build_event_record(build=build, kind="secret_undecryptable", actor="control-plane",
                               attempt_number=attempt_number, secret=error.where, detail=detail)
            failure_reason = FailureReason.RUNNER_SYSTEM_FAILURE if state == BuildState.FAILED else ""
            attempt_finish(build=build, attempt=attempt, state=state, failure_reason=failure_reason,
                           actor="control-plane", detail=detail, allow_retry=False)
    return ClaimSecretUndecryptable(f"Build {build_id} was claimed but not handed out, and failed: {detail}")
