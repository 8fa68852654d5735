"""The rollout engine: one idempotent step that moves a rollout as far as it can go right now.

`rollout_advance(rollout_id=…)` runs inside one transaction holding the
rollout's advisory lock (drones.payloads.services.rollout_lock), so two
workers that meet on one rollout take turns, and every decision is made
from rows committed in PostgreSQL. Nothing is kept in memory between runs:
a worker SIGKILLed mid-step rolls its transaction back and the next wake
(an agent report, a timer, or beat's `drones.tick_rollouts`) redoes the
step from the same rows. Messages to agents are sent only after commit;
a dispatch whose message was lost is re-sent after `RESEND_AFTER` seconds,
and the agent deduplicates by target id, so a re-send never deploys twice.

One step, in order (Nomad's `update` semantics, Mender's per-drone states):

1. `pending` → `running`.
2. Drones that reported healthy and stayed so for `min_healthy_time` →
   `succeeded`; dispatched drones that went offline → `skipped`; drones
   with no final report within `healthy_deadline` → `failed`.
3. Reverting: send each pending revert; when none is left → `reverted`.
4. More failures than the budget, or no progress for `progress_deadline` →
   `reverting` (auto_revert) or `failed`.
5. Paused / awaiting promotion: nothing is sent.
6. Canary gate: only canaries until they all succeeded; then promote
   (auto_promote) or wait in `awaiting_promotion`.
7. Dispatch to at most `max_parallel` drones at once (offline or paused
   drones → `skipped`; a drone already reporting the hash →
   `already_installed`).
8. Every target done → `succeeded`; desired versions recorded.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from bundles.downloads import bundle_download_url
from drones.payloads.choices import (
    DONE_TARGET_STATES,
    PayloadEventKind,
    RevertState,
    RolloutState,
    TargetState,
)
from drones.payloads.events import EventBatch, emit_rollout_changed_on_commit
from drones.payloads.models import DronePayloadState, Rollout, RolloutTarget
from drones.payloads.services import (
    drone_is_deployable,
    rollout_begin_revert,
    rollout_lock,
    rollout_record_desired,
    rollout_state_set,
)
from drones.payloads.wake import rollout_wake_claimed, rollout_wake_later

logger = logging.getLogger(__name__)

ENGINE = "engine"
#: A dispatched drone that has not said anything for this long gets the command again.
RESEND_AFTER = 10.0
MAX_DISPATCHES = 5


@dataclass
class Step:
    """What one advance did (for tests, logs and the bench)."""

    rollout_id: int
    state: str = ""
    dispatched: int = 0
    changed_targets: int = 0
    events: int = 0
    next_wake: float | None = None
    messages: list[tuple[int, dict]] = field(default_factory=list)


def _url(bundle, urls: dict | None) -> str:
    if urls is None:
        return bundle_download_url(bundle)
    if bundle.pk not in urls:  # one presigned URL per bundle and step, not per drone
        urls[bundle.pk] = bundle_download_url(bundle)
    return urls[bundle.pk]


def deploy_message(target: RolloutTarget, *, action: str = "deploy", urls: dict | None = None) -> dict:
    """The `deploy_payload` command for one target (a revert points at the previous version)."""
    version = target.payload_version
    payload_type = version.payload_type
    message = {"type": "deploy_payload", "action": action, "target_id": target.pk, "rollout_id": target.rollout_id,
               "payload_type": payload_type.name, "install_root": payload_type.install_root,
               "health": payload_type.health_spec(), "restarts_agent": payload_type.restarts_agent,
               "keep_releases": max(2, payload_type.keep_releases)}
    if action == "revert":
        previous = target.previous_version
        message.update({"version": previous.version if previous else "",
                        "sha256": previous.bundle.sha256 if previous else target.previous_sha256,
                        "size": previous.bundle.size if previous else 0,
                        "url": _url(previous.bundle, urls) if previous else "",
                        "replacing_sha256": version.bundle.sha256})
    else:
        message.update({"version": version.version, "sha256": version.bundle.sha256, "size": version.bundle.size,
                        "url": _url(version.bundle, urls)})
    return message


def _failure_limit(rollout: Rollout, total_drones: int) -> int:
    if rollout.failure_budget_is_percent:
        return math.floor(total_drones * rollout.failure_budget / 100)
    return rollout.failure_budget


def rollout_advance(*, rollout_id: int) -> Step:
    """Advance one rollout by one idempotent step (see the module docstring)."""
    rollout_wake_claimed(rollout_id)
    step = Step(rollout_id=rollout_id)
    with transaction.atomic():
        rollout_lock(rollout_id=rollout_id)
        rollout = Rollout.objects.filter(pk=rollout_id).first()
        if rollout is None or rollout.is_finished:
            step.state = rollout.state if rollout else "missing"
            return step
        _advance_locked(rollout, step)
        step.state = rollout.state
    if step.messages:
        _send(step.messages)
    if step.next_wake is not None and not rollout.is_finished:
        rollout_wake_later(rollout_id, seconds=step.next_wake)
    return step


def _send(messages: list[tuple[int, dict]]) -> None:
    from drones.events import drones_send

    try:
        drones_send(messages)
    except Exception:  # noqa: BLE001 - agents poll while their socket is down; the engine re-sends
        logger.warning("could not push %d deploy command(s)", len(messages), exc_info=True)


TARGET_RELATED = ("drone", "payload_version__payload_type", "payload_version__bundle", "previous_version__bundle")

SAVE_TARGETS_SQL = f"""
UPDATE {RolloutTarget._meta.db_table} AS target SET
    state = changed.state, reason = changed.reason, dispatched_at = changed.dispatched_at,
    dispatches = changed.dispatches, state_changed_at = changed.state_changed_at, healthy_at = changed.healthy_at,
    revert_state = changed.revert_state
FROM unnest(%(ids)s::bigint[], %(states)s::text[], %(reasons)s::text[], %(dispatched)s::timestamptz[],
            %(dispatches)s::int[], %(changed_at)s::timestamptz[], %(healthy)s::timestamptz[], %(reverts)s::text[])
     AS changed(id, state, reason, dispatched_at, dispatches, state_changed_at, healthy_at, revert_state)
WHERE target.id = changed.id
"""

PROMOTE_HEALTHY_SQL = f"""
UPDATE {RolloutTarget._meta.db_table} SET state = 'succeeded', reason = %(reason)s, state_changed_at = %(now)s
WHERE rollout_id = %(rollout)s AND state = 'verifying' AND revert_state = '' AND healthy_at <= %(healthy_before)s
RETURNING id, drone_id
"""

# One row of counts per step, whatever the size of the fleet: drones in all, failed, busy (counting against
# max_parallel), undispatched canaries, anything not done, and when the next verifying target counts as healthy.
COUNTS_SQL = f"""
SELECT count(DISTINCT drone_id),
       count(DISTINCT drone_id) FILTER (WHERE state = 'failed'),
       count(DISTINCT drone_id) FILTER (WHERE state IN ('downloading', 'installing', 'verifying')
                                        OR (state = 'pending' AND dispatched_at IS NOT NULL)),
       count(*) FILTER (WHERE is_canary AND state NOT IN ('succeeded', 'failed', 'already_installed', 'skipped',
                                                          'reverted')),
       count(*) FILTER (WHERE state NOT IN ('succeeded', 'failed', 'already_installed', 'skipped', 'reverted')),
       min(healthy_at) FILTER (WHERE state = 'verifying' AND revert_state = ''),
       min(dispatched_at) FILTER (WHERE healthy_at IS NULL AND revert_state = '' AND state IN
                                  ('pending', 'downloading', 'installing', 'verifying')),
       min(dispatched_at) FILTER (WHERE state = 'pending' AND revert_state = '')
FROM {RolloutTarget._meta.db_table} WHERE rollout_id = %(rollout)s
"""


def _save_targets(changed: dict[int, RolloutTarget]) -> None:
    """Write the changed targets in one statement (Django's bulk_update builds a CASE per field and row)."""
    if not changed:
        return
    rows = list(changed.values())
    with connection.cursor() as cursor:
        cursor.execute(SAVE_TARGETS_SQL, {
            "ids": [row.pk for row in rows], "states": [row.state for row in rows],
            "reasons": [row.reason for row in rows], "dispatched": [row.dispatched_at for row in rows],
            "dispatches": [row.dispatches for row in rows], "changed_at": [row.state_changed_at for row in rows],
            "healthy": [row.healthy_at for row in rows], "reverts": [row.revert_state for row in rows]})


def _advance_locked(rollout: Rollout, step: Step) -> None:
    """One step, reading only what it acts on: the drones in flight and the next ones to send (bounded by
    max_parallel), plus one row of counts — not every target of the rollout."""
    now = timezone.now()
    batch = EventBatch()
    changed: dict[int, RolloutTarget] = {}
    timers: list[float] = []
    urls: dict[int, str] = {}

    def move(target: RolloutTarget, state: str, reason: str, kind: str = PayloadEventKind.TARGET) -> None:
        batch.add(kind=kind, rollout=rollout, target=target, drone_id=target.drone_id, from_state=target.state,
                  to_state=state, detail=reason[:1000], actor=ENGINE)
        target.state, target.reason, target.state_changed_at = state, reason[:500], now
        changed[target.pk] = target
        rollout.last_progress_at = now

    def message(target: RolloutTarget, action: str = "deploy") -> dict:
        return deploy_message(target, action=action, urls=urls)

    if rollout.state == RolloutState.PENDING:
        rollout.started_at = now
        rollout.last_progress_at = now
        rollout_state_set(rollout=rollout, state=RolloutState.RUNNING, actor=ENGINE, batch=batch, detail="started")

    if rollout.state == RolloutState.REVERTING:
        targets = list(rollout.targets.filter(revert_state__in=[RevertState.PENDING, RevertState.SENT])
                       .select_related(*TARGET_RELATED))
        _advance_revert(rollout, targets, changed, batch, step, timers, now, message)
        _finish_step(rollout, step, batch, changed, timers)
        return

    # 2. health timers (in SQL), then offline drones and deadlines among the drones in flight.
    with connection.cursor() as cursor:
        cursor.execute(PROMOTE_HEALTHY_SQL, {
            "rollout": rollout.pk, "now": now, "reason": f"healthy for {rollout.min_healthy_time:g} s",
            "healthy_before": now - timedelta(seconds=rollout.min_healthy_time)})
        promoted = cursor.fetchall()
    for target_id, drone_id in promoted:
        batch.add(kind=PayloadEventKind.TARGET, rollout=rollout, target_id=target_id, drone_id=drone_id,
                  from_state=TargetState.VERIFYING, to_state=TargetState.SUCCEEDED, actor=ENGINE,
                  detail=f"healthy for {rollout.min_healthy_time:g} s")
    if promoted:
        rollout.last_progress_at = now
    # Only the drones in flight that need a decision now (usually none) are loaded; the rest wait on timers.
    window = timedelta(seconds=settings.SWARM_DRONE_HEARTBEAT_INTERVAL * settings.SWARM_DRONE_STALE_AFTER_MISSED)
    gone = (Q(drone__status__in=["stale", "offline"]) | Q(drone__stop_requested=True)
            | Q(drone__last_heartbeat_at__isnull=True) | Q(drone__last_heartbeat_at__lt=now - window))
    attention = (Q(dispatched_at__lte=now - timedelta(seconds=rollout.healthy_deadline))
                 | Q(state=TargetState.PENDING, dispatched_at__lte=now - timedelta(seconds=RESEND_AFTER))
                 | (gone & ~Q(drone__status="paused")))
    in_flight = list(rollout.targets.filter(dispatched_at__isnull=False, revert_state="", healthy_at__isnull=True)
                     .exclude(state__in=DONE_TARGET_STATES).filter(attention).select_related(*TARGET_RELATED))
    for target in in_flight:
        waited = (now - target.dispatched_at).total_seconds()
        if not drone_is_deployable(drone=target.drone, now=now) and target.drone.status != "paused":
            move(target, TargetState.SKIPPED, "the drone went offline during the deploy (reconciled later)")
        elif waited >= rollout.healthy_deadline:
            move(target, TargetState.FAILED, f"healthy_deadline: not healthy {rollout.healthy_deadline:g} s after "
                                             "the deploy was sent")
        elif target.state == TargetState.PENDING and target.dispatches < MAX_DISPATCHES:
            target.dispatched_at, target.dispatches = now, target.dispatches + 1
            changed[target.pk] = target
            step.messages.append((target.drone_id, message(target)))
    _save_targets(changed)
    changed.clear()
    counts = _counts(rollout)
    if counts["next_healthy_at"] is not None:
        timers.append(max(0.05, rollout.min_healthy_time - (now - counts["next_healthy_at"]).total_seconds()))
    if counts["oldest_dispatch"] is not None:  # the next deadline, and the next re-send of a silent drone
        waited = (now - counts["oldest_dispatch"]).total_seconds()
        timers.append(max(0.1, rollout.healthy_deadline - waited))
    if counts["oldest_unanswered"] is not None:
        timers.append(max(0.1, RESEND_AFTER - (now - counts["oldest_unanswered"]).total_seconds()))
    _advance_forward(rollout, counts, changed, batch, step, timers, now, move, message)
    _finish_step(rollout, step, batch, changed, timers)


def _counts(rollout: Rollout) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(COUNTS_SQL, {"rollout": rollout.pk})
        (drones, failed, busy, canaries_left, not_done, next_healthy_at, oldest_dispatch,
         oldest_unanswered) = cursor.fetchone()
    return {"drones": drones, "failed": failed, "busy": busy, "canaries_left": canaries_left, "not_done": not_done,
            "next_healthy_at": next_healthy_at, "oldest_dispatch": oldest_dispatch,
            "oldest_unanswered": oldest_unanswered}


def _finish_step(rollout: Rollout, step: Step, batch: EventBatch, changed: dict, timers: list[float]) -> None:
    _save_targets(changed)
    rollout.ticks += 1
    rollout.save()
    step.events = batch.write()
    step.changed_targets = len(changed)
    if step.events:
        emit_rollout_changed_on_commit(rollout_id=rollout.pk)
    if timers:
        step.next_wake = max(0.05, min(timers))


def _all_targets(rollout: Rollout) -> list[RolloutTarget]:
    return list(rollout.targets.select_related(*TARGET_RELATED))


def _advance_forward(rollout, counts, changed, batch, step, timers, now, move, message) -> None:
    # 4. failure budget and progress deadline.
    limit = _failure_limit(rollout, counts["drones"])
    stalled = (rollout.state == RolloutState.RUNNING and rollout.last_progress_at is not None
               and (now - rollout.last_progress_at).total_seconds() >= rollout.progress_deadline)
    if stalled:
        for target in rollout.targets.filter(dispatched_at__isnull=False).exclude(state__in=DONE_TARGET_STATES):
            move(target, TargetState.FAILED, f"progress_deadline: no progress for {rollout.progress_deadline:g} s")
    if counts["failed"] > limit or stalled:
        reason = (f"progress_deadline: no progress for {rollout.progress_deadline:g} s" if stalled else
                  f"{counts['failed']} drone(s) failed, more than the failure budget of {limit}")
        _save_targets(changed)
        changed.clear()
        if rollout.auto_revert:
            rollout_begin_revert(rollout=rollout, batch=batch, actor=ENGINE, reason=f"auto_revert: {reason}")
            targets = list(rollout.targets.filter(revert_state=RevertState.PENDING).select_related(*TARGET_RELATED))
            _advance_revert(rollout, targets, changed, batch, step, timers, now, message)
        else:
            for target in rollout.targets.filter(state=TargetState.PENDING, dispatched_at__isnull=True):
                move(target, TargetState.SKIPPED, "rollout failed")
            _save_targets(changed)
            changed.clear()
            rollout_state_set(rollout=rollout, state=RolloutState.FAILED, actor=ENGINE, batch=batch, detail=reason)
            rollout_record_desired(rollout=rollout, targets=_all_targets(rollout))
        return

    if rollout.state in (RolloutState.PAUSED, RolloutState.AWAITING_PROMOTION):
        return

    # 6. canary gate.
    canaries_only = False
    if rollout.canary and rollout.promoted_at is None:
        if counts["canaries_left"] == 0:
            if rollout.auto_promote:
                rollout.promoted_at = now
                batch.add(kind=PayloadEventKind.ROLLOUT, rollout=rollout, from_state=rollout.state,
                          to_state=rollout.state, actor=ENGINE, detail="canaries healthy: auto-promoted")
            else:
                rollout_state_set(rollout=rollout, state=RolloutState.AWAITING_PROMOTION, actor=ENGINE,
                                  batch=batch, detail=f"{min(rollout.canary, counts['drones'])} canary drone(s) "
                                                      "healthy")
                return
        else:
            canaries_only = True

    # 7. dispatch within max_parallel (counted in drones), reading only the next candidates.
    slots = rollout.max_parallel - counts["busy"]
    rollout_types = 1 if rollout.payload_version_id else max(1, rollout.release.payload_versions.count())
    dispatched_any = False
    while slots > 0:
        candidates = rollout.targets.filter(state=TargetState.PENDING, dispatched_at__isnull=True)
        if canaries_only:
            candidates = candidates.filter(is_canary=True)
        candidates = list(candidates.exclude(pk__in=list(changed)).select_related(*TARGET_RELATED)
                          .order_by("position", "id")[:slots * rollout_types])
        if not candidates:
            break
        by_drone: dict[int, list[RolloutTarget]] = defaultdict(list)
        for target in candidates:
            by_drone[target.drone_id].append(target)
        reported = _reported_hashes(list(by_drone), candidates)
        for drone_id in sorted(by_drone, key=lambda pk: by_drone[pk][0].position):
            if slots <= 0:
                break
            drone_targets = by_drone[drone_id]
            drone = drone_targets[0].drone
            if not drone_is_deployable(drone=drone, now=now):
                for target in drone_targets:
                    move(target, TargetState.SKIPPED, f"drone {drone.status}; reconciled when it is back")
                continue
            sent = False
            for target in drone_targets:
                version = target.payload_version
                if reported.get((drone_id, version.payload_type_id)) == version.bundle.sha256:
                    move(target, TargetState.ALREADY_INSTALLED, "the drone already reports this version's hash")
                    continue
                target.dispatched_at, target.dispatches = now, 1
                changed[target.pk] = target
                batch.add(kind=PayloadEventKind.DISPATCH, rollout=rollout, target=target, drone_id=drone_id,
                          from_state=target.state, to_state=target.state, actor=ENGINE,
                          detail=f"deploy_payload {version} sent")
                step.messages.append((drone_id, message(target)))
                step.dispatched += 1
                sent = True
            if sent:
                slots -= 1
                dispatched_any = True
    if dispatched_any:
        rollout.last_progress_at = now
        timers.append(RESEND_AFTER)

    # 8. done?
    _save_targets(changed)
    changed.clear()
    if counts["not_done"] and not _any_left(rollout):
        counts["not_done"] = 0
    if not counts["not_done"]:
        targets = _all_targets(rollout)
        if rollout.canary and rollout.promoted_at is None:
            rollout.promoted_at = now
        tally = defaultdict(int)
        for target in targets:
            tally[target.state] += 1
        summary = ", ".join(f"{count} {state}" for state, count in sorted(tally.items()))
        rollout_state_set(rollout=rollout, state=RolloutState.SUCCEEDED, actor=ENGINE, batch=batch, detail=summary)
        rollout_record_desired(rollout=rollout, targets=targets)
    elif rollout.last_progress_at is not None:
        timers.append(max(0.1, rollout.progress_deadline - (now - rollout.last_progress_at).total_seconds()))


def _any_left(rollout: Rollout) -> bool:
    return rollout.targets.exclude(state__in=DONE_TARGET_STATES).exists()


def _reported_hashes(drone_ids: list[int], targets: list[RolloutTarget]) -> dict[tuple[int, int], str]:
    type_ids = {target.payload_version.payload_type_id for target in targets}
    return {(drone_id, type_id): sha256 for drone_id, type_id, sha256 in DronePayloadState.objects.filter(
        drone_id__in=drone_ids, payload_type_id__in=type_ids).values_list("drone_id", "payload_type_id",
                                                                         "reported_sha256")}


def _advance_revert(rollout, targets, changed, batch, step, timers, now, message) -> None:
    for target in targets:
        if target.revert_state == RevertState.PENDING:
            if not drone_is_deployable(drone=target.drone, now=now):
                target.revert_state = RevertState.FAILED
                target.reason = "drone offline during the revert (reconciled later)"
                changed[target.pk] = target
                batch.add(kind=PayloadEventKind.REVERT, rollout=rollout, target=target, drone_id=target.drone_id,
                          from_state=target.state, to_state=target.state, actor=ENGINE, detail=target.reason)
                continue
            target.revert_state, target.dispatched_at, target.dispatches = RevertState.SENT, now, 1
            changed[target.pk] = target
            batch.add(kind=PayloadEventKind.REVERT, rollout=rollout, target=target, drone_id=target.drone_id,
                      from_state=target.state, to_state=target.state, actor=ENGINE,
                      detail=f"revert to {target.previous_version or 'nothing'} sent")
            step.messages.append((target.drone_id, message(target, "revert")))
            timers.append(RESEND_AFTER)
        elif target.revert_state == RevertState.SENT and target.dispatched_at is not None:
            waited = (now - target.dispatched_at).total_seconds()
            if waited >= rollout.healthy_deadline:
                target.revert_state = RevertState.FAILED
                target.reason = f"revert not confirmed within {rollout.healthy_deadline:g} s"
                changed[target.pk] = target
                batch.add(kind=PayloadEventKind.REVERT, rollout=rollout, target=target, drone_id=target.drone_id,
                          from_state=target.state, to_state=target.state, actor=ENGINE, detail=target.reason)
            elif waited >= RESEND_AFTER * target.dispatches and target.dispatches < MAX_DISPATCHES:
                target.dispatches += 1
                changed[target.pk] = target
                step.messages.append((target.drone_id, message(target, "revert")))
                timers.append(RESEND_AFTER)
            else:
                timers.append(max(0.1, min(rollout.healthy_deadline - waited,
                                           RESEND_AFTER * target.dispatches - waited)))
    _save_targets(changed)
    changed.clear()
    if not any(target.revert_state in (RevertState.PENDING, RevertState.SENT) for target in targets):
        targets = _all_targets(rollout)
        failed = sum(1 for target in targets if target.revert_state == RevertState.FAILED)
        reverted = sum(1 for target in targets if target.state == TargetState.REVERTED)
        rollout_state_set(rollout=rollout, state=RolloutState.REVERTED, actor=ENGINE, batch=batch,
                   detail=f"{reverted} target(s) reverted" + (f", {failed} revert(s) failed" if failed else ""))
        rollout_record_desired(rollout=rollout, targets=targets)


def rollouts_active_ids() -> list[int]:
    """Rollouts beat should wake: every one not finished."""
    from drones.payloads.choices import ACTIVE_ROLLOUT_STATES

    return list(Rollout.objects.filter(state__in=ACTIVE_ROLLOUT_STATES).values_list("pk", flat=True))


def rollout_progress(rollout: Rollout) -> dict:
    """Counts per target state and the share done (for the API, the CLI and the admin)."""
    counts: dict[str, int] = defaultdict(int)
    for state in rollout.targets.values_list("state", flat=True):
        counts[state] += 1
    total = sum(counts.values())
    done = sum(counts.get(state, 0) for state in DONE_TARGET_STATES)
    return {"total": total, "done": done, "percent": round(100 * done / total, 1) if total else 100.0,
            "states": dict(counts)}
