"""Writes for payloads: push a version, create a release, start a rollout, the operator verbs, agent reports.

Every rollout write takes the rollout's transaction-level advisory lock
(`rollout_lock`), the same one the engine holds while it advances the
rollout, so an operator's verb and the engine never interleave; the engine
is woken after commit.
"""
from __future__ import annotations

import hashlib
import json
import re

from dataclasses import dataclass
from datetime import date

import semver
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from bundles.services import bundle_check_received, bundle_referenced
from bundles.upload import ReceivedBundle
from drones.choices import DroneStatus
from drones.models import Drone
from drones.payloads.choices import (
    ACTIVE_ROLLOUT_STATES,
    AGENT_REPORT_ORDER,
    DONE_TARGET_STATES,
    PayloadEventKind,
    RevertState,
    RolloutState,
    TargetState,
)
from drones.payloads.events import EventBatch, emit_rollout_changed_on_commit
from drones.payloads.models import (
    DronePayloadState,
    PayloadType,
    PayloadVersion,
    Release,
    Rollout,
    RolloutTarget,
)
from drones.payloads.wake import rollout_wake_on_commit
from swarm.core.errors import ApiError, Conflict, NotFound
from swarm.core.services import audit_record

RELEASE_NAME = re.compile(r"^v(\d{4})\.(\d{2})\.(\d{2})(?:\.(\d{1,4}))?$")
# Advisory lock namespaces (the two-key form: namespace, id).
ROLLOUT_LOCK_NAMESPACE = 0x5041  # "PA"
ROLLOUT_START_LOCK = (0x5042, 0)


def rollout_lock(*, rollout_id: int) -> None:
    """Take the rollout's advisory lock for the rest of the current transaction (blocks until free)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ROLLOUT_LOCK_NAMESPACE, int(rollout_id)])


# --- payload versions -------------------------------------------------------------


def parse_payload_label(*, version: str) -> str:
    """A payload version label: semver (1.2.0) or a date label (v2026.12.01 or v2026.12.01.2)."""
    label = (version or "").strip()
    if not label:
        raise ApiError("version is required.", code="missing_field", field="version")
    if RELEASE_NAME.match(label):
        _check_date_label(label, field="version")
        return label
    try:
        semver.Version.parse(label)
    except ValueError:
        raise ApiError(f"{label!r} is neither a semantic version (1.2.0) nor vYYYY.MM.DD[.N].",
                       code="invalid_version", field="version") from None
    return label


def _check_date_label(label: str, *, field: str) -> None:
    year, month, day, _ = RELEASE_NAME.match(label).groups()
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        raise ApiError(f"{label!r} does not name a real date.", code="invalid_version", field=field) from None


@dataclass(frozen=True)
class PushedPayload:
    """The payload version an upload registered (or found: same type, same bytes)."""

    version: PayloadVersion
    deduplicated: bool


def payload_version_push(*, actor, type_name: str, version: str, notes: str = "", received: ReceivedBundle,
                         declared_sha256: str | None = None) -> PushedPayload:
    """Register an uploaded bundle as a new immutable version of a payload type.

    The bundle goes through the same safety rules as every bundle (hostile
    members are refused and nothing is kept) and is stored once whatever
    uses it. The same bytes for the same type again → the existing version;
    a label already taken by other bytes → 409. An unknown type is created
    with defaults (no health check), to be tuned in the admin.
    """
    try:
        label = parse_payload_label(version=version)
        name = (type_name or "").strip()
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
            raise ApiError("type must be a slug (lowercase letters, digits, - and _).", code="invalid_type",
                           field="type")
        bundle_check_received(received=received, declared_sha256=declared_sha256)
        payload_type, _ = PayloadType.objects.get_or_create(name=name)
        existing = _existing_payload_version(payload_type, label, received.sha256)
        if existing is not None:
            received.discard()
            return PushedPayload(version=existing, deduplicated=True)
    except Exception:
        received.discard()
        raise
    with bundle_referenced(received=received) as bundle:
        PayloadType.objects.select_for_update().get(pk=payload_type.pk)
        existing = _existing_payload_version(payload_type, label, received.sha256)
        if existing is not None:
            return PushedPayload(version=existing, deduplicated=True)
        created = PayloadVersion.objects.create(payload_type=payload_type, version=label, bundle=bundle,
                                                notes=notes or "", created_by=str(actor))
        audit_record(actor=actor, action="payload_version.push", obj=created,
                     detail={"type": name, "version": label, "bundle": received.sha256})
    return PushedPayload(version=created, deduplicated=False)


def _existing_payload_version(payload_type: PayloadType, label: str, sha256: str) -> PayloadVersion | None:
    same_bytes = payload_type.versions.select_related("bundle").filter(bundle__sha256=sha256).first()
    if same_bytes is not None:
        return same_bytes
    taken = payload_type.versions.select_related("bundle").filter(version=label).first()
    if taken is not None:
        raise Conflict(f"{payload_type.name} {label} already exists with bundle {taken.bundle.sha256}; payload "
                       "versions are immutable.", code="version_exists", field="version")
    return None


# --- releases ---------------------------------------------------------------------


def release_manifest(*, name: str, versions: list[PayloadVersion]) -> dict:
    """The release's manifest: its name and every payload version with its checksum, sorted by type."""
    return {"schema": "swarm-release/v1", "release": name,
            "payloads": [{"type": version.payload_type.name, "version": version.version,
                          "sha256": version.bundle.sha256, "size": version.bundle.size}
                         for version in sorted(versions, key=lambda item: item.payload_type.name)]}


def canonical_json(document: dict) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace, UTF-8): what a release's sha256 is taken over."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _next_release_name(today: date) -> str:
    base = f"v{today:%Y.%m.%d}"
    taken = set(Release.objects.filter(name__startswith=base).values_list("name", flat=True))
    if base not in taken:
        return base
    number = 1
    while f"{base}.{number}" in taken:
        number += 1
    return f"{base}.{number}"


def current_payload_versions() -> dict[str, PayloadVersion]:
    """Per payload type, the desired version most drones have: what the fleet runs now."""
    counted = (DronePayloadState.objects.filter(desired_version__isnull=False)
               .values("payload_type_id", "desired_version_id").annotate(drones=Count("id"))
               .order_by("payload_type_id", "-drones", "-desired_version_id"))
    chosen: dict[int, int] = {}
    for row in counted:
        chosen.setdefault(row["payload_type_id"], row["desired_version_id"])
    versions = PayloadVersion.objects.select_related("payload_type", "bundle").filter(pk__in=chosen.values())
    return {version.payload_type.name: version for version in versions}


def release_create(*, actor, name: str | None = None, from_current: bool = False,
                   payloads: dict[str, str] | None = None, notes: str = "") -> Release:
    """Create an immutable release from the fleet's current versions and/or explicit `type=version` pairs."""
    chosen: dict[str, PayloadVersion] = current_payload_versions() if from_current else {}
    for type_name, label in (payloads or {}).items():
        version = (PayloadVersion.objects.select_related("payload_type", "bundle")
                   .filter(payload_type__name=type_name, version=label).first())
        if version is None:
            raise NotFound(f"There is no payload version {type_name}={label}.", field="payloads")
        chosen[type_name] = version
    if not chosen:
        raise ApiError("A release needs at least one payload version (--from-current found none).",
                       code="empty_release", field="payloads")
    with transaction.atomic():
        with connection.cursor() as cursor:  # two creates on one day must not pick the same name
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [0x5043, 0])
        if name:
            if not RELEASE_NAME.match(name):
                raise ApiError("A release is named vYYYY.MM.DD or vYYYY.MM.DD.N.", code="invalid_name", field="name")
            _check_date_label(name, field="name")
            if Release.objects.filter(name=name).exists():
                raise Conflict(f"Release {name} already exists; releases are immutable.", code="release_exists",
                               field="name")
        else:
            name = _next_release_name(timezone.localdate())
        manifest = release_manifest(name=name, versions=list(chosen.values()))
        release = Release.objects.create(name=name, manifest=manifest,
                                         manifest_sha256=hashlib.sha256(canonical_json(manifest)).hexdigest(),
                                         notes=notes or "", created_by=str(actor))
        release.payload_versions.set(chosen.values())
        audit_record(actor=actor, action="release.create", obj=release,
                     detail={"name": name, "sha256": release.manifest_sha256})
    return release


# --- rollouts ---------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutStrategy:
    """Nomad's `update` block plus a failure budget."""

    max_parallel: int = 1
    canary: int = 0
    min_healthy_time: float = 10.0
    healthy_deadline: float = 300.0
    progress_deadline: float = 600.0
    auto_revert: bool = False
    auto_promote: bool = False
    failure_budget: int = 0
    failure_budget_is_percent: bool = False

    def check(self) -> None:
        if self.max_parallel < 1:
            raise ApiError("max_parallel must be at least 1.", code="invalid", field="max_parallel")
        for name in ("min_healthy_time", "healthy_deadline", "progress_deadline"):
            if getattr(self, name) < 0:
                raise ApiError(f"{name} must not be negative.", code="invalid", field=name)
        if self.healthy_deadline <= self.min_healthy_time:
            raise ApiError("healthy_deadline must be longer than min_healthy_time.", code="invalid",
                           field="healthy_deadline")
        if self.failure_budget_is_percent and self.failure_budget > 100:
            raise ApiError("A percentage failure budget is at most 100.", code="invalid", field="failure_budget")


def rollout_targeted_drones(*, target_all: bool, labels: list[str], names: list[str]) -> list[Drone]:
    """The drones a rollout targets, in name order: all, those carrying every label, or by name."""
    if sum(bool(choice) for choice in (target_all, labels, names)) != 1:
        raise ApiError("Target exactly one of: all, labels, names.", code="invalid_target", field="target")
    drones = Drone.objects.order_by("name")
    if names:
        found = list(drones.filter(name__in=names))
        missing = sorted(set(names) - {drone.name for drone in found})
        if missing:
            raise NotFound(f"No drone named {', '.join(missing)}.", field="names")
        return found
    if labels:
        return [drone for drone in drones if set(labels) <= set(drone.labels or [])]
    return list(drones)


def rollout_start(*, actor, strategy: RolloutStrategy, payload_version: PayloadVersion | None = None,
                  release: Release | None = None, target_all: bool = False, labels: list[str] | None = None,
                  names: list[str] | None = None, is_reconcile: bool = False) -> Rollout:
    """Create a rollout and its per-drone targets; the engine starts it after commit.

    A drone and payload type that an active rollout already targets is
    refused with 409 naming that rollout (never queued: the operator decides
    whether to wait, abort or revert it).
    """
    strategy.check()
    if (payload_version is None) == (release is None):
        raise ApiError("Roll out exactly one of a payload version or a release.", code="invalid",
                       field="payload_version")
    versions = [payload_version] if payload_version else list(
        release.payload_versions.select_related("payload_type", "bundle"))
    drones = rollout_targeted_drones(target_all=target_all, labels=labels or [], names=names or [])
    if not drones:
        raise ApiError("No drone matches the rollout's target.", code="no_targets", field="target")
    with transaction.atomic():
        with connection.cursor() as cursor:  # concurrent starts must see each other's targets
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(ROLLOUT_START_LOCK))
        _refuse_overlap(drone_ids=[drone.id for drone in drones],
                        type_ids=[version.payload_type_id for version in versions])
        rollout = Rollout.objects.create(
            release=release, payload_version=payload_version, target_all=target_all, target_labels=labels or [],
            target_names=names or [], is_reconcile=is_reconcile, created_by=str(actor),
            **{name: getattr(strategy, name) for name in RolloutStrategy.__dataclass_fields__})
        states = {(state.drone_id, state.payload_type_id): state for state in DronePayloadState.objects.filter(
            drone__in=drones, payload_type_id__in=[version.payload_type_id for version in versions])}
        targets = []
        for position, drone in enumerate(drones):
            for version in versions:
                state = states.get((drone.id, version.payload_type_id))
                targets.append(RolloutTarget(
                    rollout=rollout, drone=drone, payload_version=version, position=position,
                    is_canary=position < strategy.canary,
                    previous_version_id=state.desired_version_id if state else None,
                    previous_sha256=state.reported_sha256 if state else ""))
        RolloutTarget.objects.bulk_create(targets)
        batch = EventBatch()
        batch.add(kind=PayloadEventKind.ROLLOUT, rollout=rollout, to_state=RolloutState.PENDING, actor=str(actor),
                  detail=f"{rollout.subject_label} to {len(drones)} drone(s)")
        batch.write()
        if not is_reconcile:
            audit_record(actor=actor, action="rollout.start", obj=rollout,
                         detail={"subject": rollout.subject_label, "drones": len(drones)})
        rollout_wake_on_commit(rollout.pk)
        emit_rollout_changed_on_commit(rollout_id=rollout.pk)
    return rollout


def _refuse_overlap(*, drone_ids: list[int], type_ids: list[int]) -> None:
    clash = (RolloutTarget.objects.filter(rollout__state__in=ACTIVE_ROLLOUT_STATES, drone_id__in=drone_ids,
                                          payload_version__payload_type_id__in=type_ids)
             .select_related("rollout", "drone", "payload_version__payload_type").order_by("rollout_id").first())
    if clash is not None:
        raise Conflict(f"Rollout {clash.rollout_id} ({clash.rollout.state}) already targets drone "
                       f"{clash.drone.name} for {clash.payload_version.payload_type.name}; wait for it, or abort "
                       "or revert it first.", code="rollout_conflict", field="target",
                       headers={"Swarm-Conflicting-Rollout": str(clash.rollout_id)})


def _locked_rollout(rollout_id: int) -> Rollout:
    rollout_lock(rollout_id=rollout_id)
    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFound(f"There is no rollout {rollout_id}.")
    return rollout


def rollout_state_set(*, rollout: Rollout, state: str, actor, batch: EventBatch, detail: str = "") -> None:
    """Move the (locked) rollout to `state`, with its event row (saved by the caller)."""
    batch.add(kind=PayloadEventKind.ROLLOUT, rollout=rollout, from_state=rollout.state, to_state=state,
              actor=str(actor), detail=detail)
    rollout.state = state
    rollout.state_reason = detail[:300]
    if state in {RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.REVERTED, RolloutState.ABORTED}:
        rollout.finished_at = timezone.now()


def _verb(rollout_id: int, *, actor, allowed: set[str], verb: str, change) -> Rollout:
    with transaction.atomic():
        rollout = _locked_rollout(rollout_id)
        if rollout.state not in allowed:
            raise Conflict(f"Rollout {rollout.pk} is {rollout.state}; {verb} needs it "
                           f"{' or '.join(sorted(allowed))}.", code=f"cannot_{verb}", field="state")
        batch = EventBatch()
        change(rollout, batch)
        rollout.last_progress_at = timezone.now()
        rollout.save()
        batch.write()
        audit_record(actor=actor, action=f"rollout.{verb}", obj=rollout, detail={"state": rollout.state})
        rollout_wake_on_commit(rollout.pk)
        emit_rollout_changed_on_commit(rollout_id=rollout.pk)
    return rollout


def rollout_pause(*, rollout_id: int, actor) -> Rollout:
    """Stop dispatching to more drones (drones already deploying finish)."""
    return _verb(rollout_id, actor=actor, verb="pause",
                 allowed={RolloutState.PENDING, RolloutState.RUNNING, RolloutState.AWAITING_PROMOTION},
                 change=lambda rollout, batch: rollout_state_set(rollout=rollout, state=RolloutState.PAUSED, actor=actor, batch=batch,
                                                          detail="paused by an operator"))


def rollout_resume(*, rollout_id: int, actor) -> Rollout:
    """Dispatch again (the engine re-enters awaiting_promotion if the canaries are waiting)."""
    return _verb(rollout_id, actor=actor, verb="resume", allowed={RolloutState.PAUSED},
                 change=lambda rollout, batch: rollout_state_set(rollout=rollout, state=RolloutState.RUNNING, actor=actor, batch=batch,
                                                          detail="resumed by an operator"))


def rollout_promote(*, rollout_id: int, actor) -> Rollout:
    """The canaries look good: roll out to the rest (409 unless awaiting promotion)."""
    def change(rollout, batch):
        rollout.promoted_at = timezone.now()
        rollout_state_set(rollout=rollout, state=RolloutState.RUNNING, actor=actor, batch=batch, detail="promoted by an operator")

    return _verb(rollout_id, actor=actor, verb="promote", allowed={RolloutState.AWAITING_PROMOTION}, change=change)


def rollout_abort(*, rollout_id: int, actor) -> Rollout:
    """Stop the rollout: drones not yet sent are skipped; drones deploying finish where they are."""
    def change(rollout, batch):
        _skip_undispatched(rollout, batch, reason="rollout aborted")
        rollout_state_set(rollout=rollout, state=RolloutState.ABORTED, actor=actor, batch=batch, detail="aborted by an operator")
        rollout_record_desired(rollout=rollout, targets=list(rollout.targets.select_related("payload_version")))

    return _verb(rollout_id, actor=actor, verb="abort",
                 allowed={RolloutState.PENDING, RolloutState.RUNNING, RolloutState.PAUSED,
                          RolloutState.AWAITING_PROMOTION}, change=change)


def rollout_revert(*, rollout_id: int, actor) -> Rollout:
    """Put every drone this rollout changed back on the version it had before (instant: it is kept on disk)."""
    def change(rollout, batch):
        rollout_begin_revert(rollout=rollout, batch=batch, actor=actor, reason="reverted by an operator")

    return _verb(rollout_id, actor=actor, verb="revert",
                 allowed={RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.AWAITING_PROMOTION,
                          RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.ABORTED}, change=change)


def _skip_undispatched(rollout: Rollout, batch: EventBatch, *, reason: str) -> None:
    now = timezone.now()
    pending = list(rollout.targets.filter(state=TargetState.PENDING, dispatched_at__isnull=True))
    for target in pending:
        batch.add(kind=PayloadEventKind.TARGET, rollout=rollout, target=target, drone_id=target.drone_id,
                  from_state=target.state, to_state=TargetState.SKIPPED, detail=reason)
        target.state, target.reason, target.state_changed_at = TargetState.SKIPPED, reason, now
    RolloutTarget.objects.bulk_update(pending, ["state", "reason", "state_changed_at"])


def rollout_begin_revert(*, rollout: Rollout, batch: EventBatch, actor, reason: str) -> None:
    """Enter `reverting`: every target that may have changed its drone gets a revert (caller holds the lock)."""
    _skip_undispatched(rollout, batch, reason="rollout reverting")
    now = timezone.now()
    changed = []
    for target in rollout.targets.exclude(state__in=[TargetState.SKIPPED, TargetState.ALREADY_INSTALLED,
                                                     TargetState.REVERTED]).exclude(revert_state=RevertState.DONE):
        if target.state == TargetState.FAILED:
            # The agent never leaves a failed deploy in place: it is back on the previous release already.
            batch.add(kind=PayloadEventKind.REVERT, rollout=rollout, target=target, drone_id=target.drone_id,
                      from_state=target.state, to_state=TargetState.REVERTED,
                      detail="the drone kept (or went back to) its previous release when the deploy failed")
            target.state, target.revert_state, target.state_changed_at = TargetState.REVERTED, RevertState.DONE, now
        else:
            target.revert_state = RevertState.PENDING
            target.dispatched_at = None
            target.dispatches = 0
        changed.append(target)
    RolloutTarget.objects.bulk_update(changed, ["state", "revert_state", "state_changed_at", "dispatched_at",
                                                "dispatches"])
    rollout.revert_of_state = rollout.state
    rollout_state_set(rollout=rollout, state=RolloutState.REVERTING, actor=actor, batch=batch, detail=reason)


def rollout_record_desired(*, rollout: Rollout, targets: list[RolloutTarget]) -> None:
    """A finished rollout sets what each drone should run: the new version where it went (or was skipped:
    reconcile brings it later), the previous one where it failed or was reverted."""
    # Skipped drones of a finished rollout get the new version as desired (drift → reconcile brings it);
    # after an abort they stay where they were.
    keep_new = {TargetState.SUCCEEDED, TargetState.ALREADY_INSTALLED}
    if rollout.state != RolloutState.ABORTED:
        keep_new.add(TargetState.SKIPPED)
    wanted: dict[tuple[int, int], int | None] = {}
    for target in targets:
        key = (target.drone_id, target.payload_version.payload_type_id)
        if target.state in keep_new and rollout.state != RolloutState.REVERTED \
                and target.revert_state != RevertState.FAILED:
            wanted[key] = target.payload_version_id
        elif target.state in (TargetState.REVERTED, TargetState.FAILED) or target.revert_state == RevertState.FAILED:
            wanted[key] = target.previous_version_id
    existing = {(state.drone_id, state.payload_type_id): state for state in DronePayloadState.objects.filter(
        drone_id__in={key[0] for key in wanted}, payload_type_id__in={key[1] for key in wanted})}
    create, update = [], []
    for (drone_id, type_id), version_id in wanted.items():
        state = existing.get((drone_id, type_id))
        if state is None:
            create.append(DronePayloadState(drone_id=drone_id, payload_type_id=type_id, desired_version_id=version_id))
        elif state.desired_version_id != version_id:
            state.desired_version_id = version_id
            update.append(state)
    DronePayloadState.objects.bulk_create(create, ignore_conflicts=True)
    DronePayloadState.objects.bulk_update(update, ["desired_version"])


# --- agent reports ----------------------------------------------------------------


def payload_report_apply(*, target: RolloutTarget, rollout: Rollout, action: str, states: list[dict],
                         batch: EventBatch, now) -> bool:
    """Apply an agent's states to a (locked) target in memory; True when it changed. Shared by the view's
    service below and the event-loop fast path (drones/payloads/fastpath.py): one set of rules."""
    changed = False
    for report in states:
        state, reason = report.get("state"), str(report.get("reason") or "")[:500]
        if action == "revert":
            changed |= _apply_revert_report(target, state, reason, batch, now)
        else:
            changed |= _apply_deploy_report(target, rollout, state, reason, batch, now)
    if changed:
        target.state_changed_at = now
    return changed


def payload_target_report(*, drone_id: int, target_id: int, action: str, states: list[dict],
                          current_sha256: str = "") -> RolloutTarget:
    """Record what an agent says about one deploy (or revert): states in order, idempotent, forward only.

    A report for a target that is already done (e.g. failed by its
    deadline) changes nothing but the drone's reported hash. Wakes the
    rollout after commit.
    """
    with transaction.atomic():
        target = (RolloutTarget.objects.select_for_update().select_related("rollout", "payload_version")
                  .filter(pk=target_id, drone_id=drone_id).first())
        if target is None:
            raise NotFound(f"This drone has no rollout target {target_id}.", field="target_id")
        now = timezone.now()
        batch = EventBatch()
        rollout = target.rollout
        if payload_report_apply(target=target, rollout=rollout, action=action, states=states, batch=batch, now=now):
            target.save(update_fields=["state", "reason", "healthy_at", "revert_state", "state_changed_at"])
            Rollout.objects.filter(pk=rollout.pk).update(last_progress_at=now)
            batch.write()
            rollout_wake_on_commit(rollout.pk)
            emit_rollout_changed_on_commit(rollout_id=rollout.pk)
        if current_sha256:
            payload_reported_hash_set(drone_id=drone_id, payload_type_id=target.payload_version.payload_type_id,
                                      sha256=current_sha256)
    return target


def _apply_deploy_report(target: RolloutTarget, rollout: Rollout, state: str, reason: str, batch: EventBatch,
                         now) -> bool:
    if state not in AGENT_REPORT_ORDER or target.state in DONE_TARGET_STATES or target.revert_state:
        return False
    if state == TargetState.SUCCEEDED:
        if target.healthy_at is not None:
            return False
        target.healthy_at = now
        if rollout.min_healthy_time > 0:
            # Healthy, but it counts once it has stayed so for min_healthy_time (the engine decides).
            batch.add(kind=PayloadEventKind.TARGET, rollout=rollout, target=target, drone_id=target.drone_id,
                      from_state=target.state, to_state=TargetState.VERIFYING,
                      detail=f"healthy; counts after {rollout.min_healthy_time:g} s")
            target.state = TargetState.VERIFYING
            return True
    elif target.state != TargetState.PENDING and AGENT_REPORT_ORDER[state] <= AGENT_REPORT_ORDER.get(target.state, 0):
        return False
    batch.add(kind=PayloadEventKind.TARGET, rollout=rollout, target=target, drone_id=target.drone_id,
              from_state=target.state, to_state=state, detail=reason)
    target.state, target.reason = state, reason
    return True


def _apply_revert_report(target: RolloutTarget, state: str, reason: str, batch: EventBatch, now) -> bool:
    if target.revert_state not in (RevertState.PENDING, RevertState.SENT):
        return False
    if state == TargetState.SUCCEEDED:
        target.revert_state, new_state = RevertState.DONE, TargetState.REVERTED
    elif state == TargetState.FAILED:
        target.revert_state, new_state = RevertState.FAILED, target.state
    else:
        return False
    batch.add(kind=PayloadEventKind.REVERT, rollout_id=target.rollout_id, target=target, drone_id=target.drone_id,
              from_state=target.state, to_state=new_state, detail=reason or f"revert {state}")
    target.state, target.reason = new_state, reason or target.reason
    return True


REPORTED_HASH_SQL = f"""
INSERT INTO {DronePayloadState._meta.db_table} AS state
    (drone_id, payload_type_id, reported_sha256, reported_at, drifted, drift_detail)
VALUES (%(drone)s, %(type)s, %(sha256)s, %(now)s, false, '')
ON CONFLICT (drone_id, payload_type_id) DO UPDATE
    SET reported_sha256 = EXCLUDED.reported_sha256, reported_at = EXCLUDED.reported_at
    WHERE state.reported_sha256 IS DISTINCT FROM EXCLUDED.reported_sha256
"""


def payload_reported_hash_set(*, drone_id: int, payload_type_id: int, sha256: str) -> None:
    """What a drone says it runs for one type (from a deploy report; heartbeats use the bulk statement)."""
    with connection.cursor() as cursor:
        cursor.execute(REPORTED_HASH_SQL, {"drone": drone_id, "type": payload_type_id, "sha256": sha256,
                                           "now": timezone.now()})


def drone_is_deployable(*, drone: Drone, now=None) -> bool:
    """Whether a rollout should send to this drone now: heartbeating, not paused or stopping."""
    from django.conf import settings

    if drone.status in (DroneStatus.PAUSED, DroneStatus.STALE, DroneStatus.OFFLINE) or drone.stop_requested:
        return False
    if drone.last_heartbeat_at is None:
        return False
    now = now or timezone.now()
    window = settings.SWARM_DRONE_HEARTBEAT_INTERVAL * settings.SWARM_DRONE_STALE_AFTER_MISSED
    return (now - drone.last_heartbeat_at).total_seconds() <= window


def payload_pending_targets(*, drone_id: int) -> list[RolloutTarget]:
    """Targets of active rollouts sent to this drone and not finished: what its HTTP poll answers."""
    return list(RolloutTarget.objects.filter(
        drone_id=drone_id, rollout__state__in=ACTIVE_ROLLOUT_STATES, dispatched_at__isnull=False)
        .exclude(state__in=DONE_TARGET_STATES, revert_state="")
        .exclude(healthy_at__isnull=False, revert_state="")  # reported healthy: only counting down
        .exclude(revert_state__in=[RevertState.DONE, RevertState.FAILED, RevertState.PENDING])
        .select_related("payload_version__payload_type", "payload_version__bundle", "previous_version__bundle")
        .order_by("id"))
