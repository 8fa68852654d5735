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

from django.db import transaction
from django.utils import timezone

from bundles.downloads import bundle_download_url
from drones.payloads.choices import (
    DONE_TARGET_STATES,
    IN_FLIGHT_TARGET_STATES,
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
TARGET_FIELDS = ["state", "reason", "dispatched_at", "dispatches", "state_changed_at", "healthy_at", "revert_state"]


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


def deploy_message(target: RolloutTarget, *, action: str = "deploy") -> dict:
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
                        "url": bundle_download_url(previous.bundle) if previous else "",
                        "replacing_sha256": version.bundle.sha256})
    else:
        message.update({"version": version.version, "sha256": version.bundle.sha256, "size": version.bundle.size,
                        "url": bundle_download_url(version.bundle)})
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


def _advance_locked(rollout: Rollout, step: Step) -> None:
    now = timezone.now()
    batch = EventBatch()
    targets = list(rollout.targets.select_related("drone", "payload_version__payload_type",
                                                  "payload_version__bundle", "previous_version__bundle"))
    changed: dict[int, RolloutTarget] = {}
    timers: list[float] = []

    def move(target: RolloutTarget, state: str, reason: str, kind: str = PayloadEventKind.TARGET) -> None:
        batch.add(kind=kind, rollout=rollout, target=target, drone_id=target.drone_id, from_state=target.state,
                  to_state=state, detail=reason[:1000], actor=ENGINE)
        target.state, target.reason, target.state_changed_at = state, reason[:500], now
        changed[target.pk] = target
        rollout.last_progress_at = now

    if rollout.state == RolloutState.PENDING:
        rollout.started_at = now
        rollout.last_progress_at = now
        rollout_state_set(rollout=rollout, state=RolloutState.RUNNING, actor=ENGINE, batch=batch, detail="started")

    # 2. health timers, offline drones, deadlines.
    for target in targets:
        if target.revert_state or target.state in DONE_TARGET_STATES:
            continue
        dispatched = target.dispatched_at is not None
        if target.state == TargetState.VERIFYING and target.healthy_at is not None:
            healthy_for = (now - target.healthy_at).total_seconds()
            if healthy_for >= rollout.min_healthy_time:
                move(target, TargetState.SUCCEEDED, f"healthy for {rollout.min_healthy_time:g} s")
            else:
                timers.append(rollout.min_healthy_time - healthy_for)
            continue
        if not dispatched:
            continue
        waited = (now - target.dispatched_at).total_seconds()
        if not drone_is_deployable(drone=target.drone, now=now) and target.drone.status != "paused":
            move(target, TargetState.SKIPPED, "the drone went offline during the deploy (reconciled later)")
        elif waited >= rollout.healthy_deadline:
            move(target, TargetState.FAILED, f"healthy_deadline: not healthy {rollout.healthy_deadline:g} s after "
                                             "the deploy was sent")
        else:
            timers.append(rollout.healthy_deadline - waited)
            if target.state == TargetState.PENDING:
                if waited >= RESEND_AFTER and target.dispatches < MAX_DISPATCHES:
                    target.dispatched_at, target.dispatches = now, target.dispatches + 1
                    changed[target.pk] = target
                    step.messages.append((target.drone_id, deploy_message(target)))
                    timers.append(RESEND_AFTER)
                else:
                    timers.append(max(0.1, RESEND_AFTER - waited))

    if rollout.state == RolloutState.REVERTING:
        _advance_revert(rollout, targets, changed, batch, step, timers, now)
    else:
        _advance_forward(rollout, targets, changed, batch, step, timers, now, move)

    if changed:
        RolloutTarget.objects.bulk_update(list(changed.values()), TARGET_FIELDS)
    rollout.ticks += 1
    rollout.save()
    step.events = batch.write()
    step.changed_targets = len(changed)
    if changed or step.events:
        emit_rollout_changed_on_commit(rollout_id=rollout.pk)
    if timers:
        step.next_wake = max(0.1, min(timers))


def _advance_forward(rollout, targets, changed, batch, step, timers, now, move) -> None:
    drones = {target.drone_id for target in targets}
    failed = {target.drone_id for target in targets if target.state == TargetState.FAILED}
    # 4. failure budget and progress deadline.
    stalled = (rollout.state == RolloutState.RUNNING and rollout.last_progress_at is not None
               and (now - rollout.last_progress_at).total_seconds() >= rollout.progress_deadline)
    if stalled:
        for target in targets:
            if target.state not in DONE_TARGET_STATES and target.dispatched_at is not None:
                move(target, TargetState.FAILED, f"progress_deadline: no progress for {rollout.progress_deadline:g} s")
    if len(failed) > _failure_limit(rollout, len(drones)) or stalled:
        reason = (f"progress_deadline: no progress for {rollout.progress_deadline:g} s" if stalled else
                  f"{len(failed)} drone(s) failed, more than the failure budget of "
                  f"{_failure_limit(rollout, len(drones))}")
        if changed:
            RolloutTarget.objects.bulk_update(list(changed.values()), TARGET_FIELDS)
            changed.clear()
        if rollout.auto_revert:
            rollout_begin_revert(rollout=rollout, batch=batch, actor=ENGINE, reason=f"auto_revert: {reason}")
            targets[:] = list(rollout.targets.select_related("drone", "payload_version__payload_type",
                                                             "payload_version__bundle", "previous_version__bundle"))
            _advance_revert(rollout, targets, changed, batch, step, timers, now)
        else:
            for target in targets:
                if target.state == TargetState.PENDING and target.dispatched_at is None:
                    move(target, TargetState.SKIPPED, "rollout failed")
            rollout_state_set(rollout=rollout, state=RolloutState.FAILED, actor=ENGINE, batch=batch, detail=reason)
            rollout_record_desired(rollout=rollout, targets=targets)
        return

    if rollout.state in (RolloutState.PAUSED, RolloutState.AWAITING_PROMOTION):
        return

    # 6. canary gate.
    eligible = targets
    if rollout.canary and rollout.promoted_at is None:
        canaries = [target for target in targets if target.is_canary]
        if all(target.state in DONE_TARGET_STATES for target in canaries):
            if rollout.auto_promote:
                rollout.promoted_at = now
                batch.add(kind=PayloadEventKind.ROLLOUT, rollout=rollout, from_state=rollout.state,
                          to_state=rollout.state, actor=ENGINE, detail="canaries healthy: auto-promoted")
            else:
                rollout_state_set(rollout=rollout, state=RolloutState.AWAITING_PROMOTION, actor=ENGINE, batch=batch,
                           detail=f"{len({t.drone_id for t in canaries})} canary drone(s) healthy")
                return
        else:
            eligible = canaries

    # 7. dispatch within max_parallel (counted in drones).
    busy = {target.drone_id for target in targets
            if target.state in IN_FLIGHT_TARGET_STATES
            or (target.state == TargetState.PENDING and target.dispatched_at is not None)}
    slots = rollout.max_parallel - len(busy)
    by_drone: dict[int, list[RolloutTarget]] = defaultdict(list)
    for target in eligible:
        if target.state == TargetState.PENDING and target.dispatched_at is None:
            by_drone[target.drone_id].append(target)
    for drone_id in sorted(by_drone, key=lambda pk: by_drone[pk][0].position):
        if slots <= 0:
            break
        drone_targets = by_drone[drone_id]
        drone = drone_targets[0].drone
        if not drone_is_deployable(drone=drone, now=now):
            for target in drone_targets:
                move(target, TargetState.SKIPPED, f"drone {drone.status}; reconciled when it is back")
            continue
        reported = _reported_hashes(drone_id, drone_targets)
        sent = False
        for target in drone_targets:
            if reported.get(target.payload_version.payload_type_id) == target.payload_version.bundle.sha256:
                move(target, TargetState.ALREADY_INSTALLED, "the drone already reports this version's hash")
                continue
            target.dispatched_at, target.dispatches = now, 1
            changed[target.pk] = target
            batch.add(kind=PayloadEventKind.DISPATCH, rollout=rollout, target=target, drone_id=drone_id,
                      from_state=target.state, to_state=target.state, actor=ENGINE,
                      detail=f"deploy_payload {target.payload_version} sent")
            step.messages.append((drone_id, deploy_message(target)))
            step.dispatched += 1
            sent = True
        if sent:
            slots -= 1
            rollout.last_progress_at = now
            timers.append(RESEND_AFTER)

    # 8. done?
    if all(target.state in DONE_TARGET_STATES for target in targets):
        if rollout.canary and rollout.promoted_at is None:
            rollout.promoted_at = now
        counts = defaultdict(int)
        for target in targets:
            counts[target.state] += 1
        summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
        rollout_state_set(rollout=rollout, state=RolloutState.SUCCEEDED, actor=ENGINE, batch=batch, detail=summary)
        rollout_record_desired(rollout=rollout, targets=targets)
    elif rollout.last_progress_at is not None:
        timers.append(max(0.1, rollout.progress_deadline - (now - rollout.last_progress_at).total_seconds()))


def _reported_hashes(drone_id: int, targets: list[RolloutTarget]) -> dict[int, str]:
    type_ids = [target.payload_version.payload_type_id for target in targets]
    return dict(DronePayloadState.objects.filter(drone_id=drone_id, payload_type_id__in=type_ids)
                .values_list("payload_type_id", "reported_sha256"))


def _advance_revert(rollout, targets, changed, batch, step, timers, now) -> None:
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
            step.messages.append((target.drone_id, deploy_message(target, action="revert")))
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
                step.messages.append((target.drone_id, deploy_message(target, action="revert")))
                timers.append(RESEND_AFTER)
            else:
                timers.append(max(0.1, min(rollout.healthy_deadline - waited,
                                           RESEND_AFTER * target.dispatches - waited)))
    if not any(target.revert_state in (RevertState.PENDING, RevertState.SENT) for target in targets):
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
