"""Drift: a drone's reported hash differs from its desired version's, and no rollout in progress explains it.

`drift_check()` evaluates the whole fleet (beat, `drones.check_payload_drift`)
or one drone (queued when a heartbeat hash changed) in one SQL statement
that flips only the rows whose verdict changed and returns them; each flip
is an event row. For payload types with `auto_reconcile`, drifted drones
that are up are put back on their desired version by a reconcile rollout
(the same machinery as any rollout), at most once per
`SWARM_PAYLOAD_RECONCILE_BACKOFF` seconds per drone and type.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from drones.models import Drone
from drones.payloads.choices import ACTIVE_ROLLOUT_STATES, PayloadEventKind
from drones.payloads.events import EventBatch
from drones.payloads.models import DronePayloadState, PayloadType, PayloadVersion, Rollout, RolloutTarget

logger = logging.getLogger(__name__)

DRIFT_SQL = f"""
WITH verdict AS (
    SELECT state.id,
           (state.reported_sha256 <> '' OR state.desired_version_id IS NOT NULL)
           AND state.reported_sha256 IS DISTINCT FROM COALESCE(bundle.sha256, '')
           AND NOT EXISTS (
               SELECT 1 FROM {RolloutTarget._meta.db_table} AS target
               JOIN {Rollout._meta.db_table} AS rollout ON rollout.id = target.rollout_id
               JOIN {PayloadVersion._meta.db_table} AS target_version ON target_version.id = target.payload_version_id
               WHERE target.drone_id = state.drone_id AND target_version.payload_type_id = state.payload_type_id
                 AND rollout.state = ANY(%(active)s)
           ) AS drifted
    FROM {DronePayloadState._meta.db_table} AS state
    LEFT JOIN {PayloadVersion._meta.db_table} AS desired ON desired.id = state.desired_version_id
    LEFT JOIN bundles_bundle AS bundle ON bundle.id = desired.bundle_id
    WHERE %(drone)s::bigint IS NULL OR state.drone_id = %(drone)s::bigint
)
UPDATE {DronePayloadState._meta.db_table} AS state
SET drifted = verdict.drifted,
    drift_since = CASE WHEN verdict.drifted THEN %(now)s END
FROM verdict
WHERE state.id = verdict.id AND state.drifted IS DISTINCT FROM verdict.drifted
RETURNING state.id, state.drone_id, state.payload_type_id, state.drifted, state.reported_sha256,
          state.desired_version_id
"""


@dataclass
class DriftReport:
    """What one drift check changed."""

    changed: int = 0
    drifted: list[tuple[int, int]] = field(default_factory=list)
    cleared: list[tuple[int, int]] = field(default_factory=list)
    reconcile_rollouts: list[int] = field(default_factory=list)


def _describe(reported: str, desired: PayloadVersion | None) -> str:
    if desired is None:
        return f"reports {reported[:12]}… for a payload type it was never given"
    if not reported:
        return f"should run {desired} ({desired.bundle.sha256[:12]}…) but reports nothing"
    return f"reports {reported[:12]}…, desired {desired} ({desired.bundle.sha256[:12]}…)"


def drift_check(*, drone_id: int | None = None) -> DriftReport:
    """Flag and clear drift (fleet-wide or one drone), write an event per change, reconcile where configured."""
    report = DriftReport()
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(DRIFT_SQL, {"active": list(ACTIVE_ROLLOUT_STATES), "drone": drone_id, "now": now})
            rows = cursor.fetchall()
        if not rows:
            return report
        desired = PayloadVersion.objects.select_related("bundle", "payload_type").in_bulk(
            {row[5] for row in rows if row[5]})
        batch = EventBatch()
        details = []
        for state_id, row_drone, type_id, drifted, reported, desired_id in rows:
            version = desired.get(desired_id)
            if drifted:
                detail = _describe(reported, version)
                report.drifted.append((row_drone, type_id))
                details.append(DronePayloadState(id=state_id, drift_detail=detail[:300]))
                batch.add(kind=PayloadEventKind.DRIFT, drone_id=row_drone, payload_type_id=type_id, detail=detail,
                          to_state="drifted", actor="drift-check")
            else:
                report.cleared.append((row_drone, type_id))
                details.append(DronePayloadState(id=state_id, drift_detail=""))
                batch.add(kind=PayloadEventKind.DRIFT_CLEARED, drone_id=row_drone, payload_type_id=type_id,
                          from_state="drifted", to_state="in_sync", actor="drift-check",
                          detail=f"reports {reported[:12]}… as desired" if reported else "in sync")
        DronePayloadState.objects.bulk_update(details, ["drift_detail"])
        report.changed = len(rows)
        batch.write()
    if report.drifted:
        report.reconcile_rollouts = drift_reconcile(auto_only=True, drone_id=drone_id)
    return report


def drift_reconcile(*, auto_only: bool = False, drone_id: int | None = None, actor="reconcile",
                    payload_type_id: int | None = None) -> list[int]:
    """Start reconcile rollouts that put drifted drones back on their desired versions; returns their ids.

    With `auto_only`, only types with `auto_reconcile`, only drones that are up, and not a drone and type
    that a reconcile rollout targeted within the backoff (an operator's call ignores the backoff).
    """
    from drones.payloads.services import RolloutStrategy, drone_is_deployable, rollout_start
    from swarm.core.errors import ApiError

    states = (DronePayloadState.objects.filter(drifted=True, desired_version__isnull=False)
              .select_related("drone", "desired_version__payload_type"))
    if auto_only:
        states = states.filter(payload_type__auto_reconcile=True)
    if drone_id is not None:
        states = states.filter(drone_id=drone_id)
    if payload_type_id is not None:
        states = states.filter(payload_type_id=payload_type_id)
    backoff_since = timezone.now() - timedelta(seconds=settings.SWARM_PAYLOAD_RECONCILE_BACKOFF)
    by_version: dict[int, list[str]] = defaultdict(list)
    versions: dict[int, PayloadVersion] = {}
    for state in states:
        if auto_only and not drone_is_deployable(drone=state.drone):
            continue
        if auto_only and RolloutTarget.objects.filter(
                drone_id=state.drone_id, rollout__is_reconcile=True, rollout__created_at__gte=backoff_since,
                payload_version__payload_type_id=state.payload_type_id).exists():
            continue
        by_version[state.desired_version_id].append(state.drone.name)
        versions[state.desired_version_id] = state.desired_version
    started = []
    for version_id, names in by_version.items():
        try:
            rollout = rollout_start(actor=actor, payload_version=versions[version_id], names=sorted(names),
                                    is_reconcile=True,
                                    strategy=RolloutStrategy(max_parallel=max(1, len(names)), min_healthy_time=0,
                                                             healthy_deadline=300, progress_deadline=600))
        except ApiError as refused:
            logger.info("reconcile of %s on %s not started: %s", versions[version_id], names, refused.detail)
            continue
        started.append(rollout.pk)
    return started


def drift_counts() -> dict[str, int]:
    """Drifted drones per payload type (every type listed, zero included): the Prometheus gauge."""
    counts = {name: 0 for name in PayloadType.objects.values_list("name", flat=True)}
    for name in (DronePayloadState.objects.filter(drifted=True)
                 .values_list("payload_type__name", flat=True)):
        counts[name] = counts.get(name, 0) + 1
    return counts


def drones_drifted() -> list[Drone]:
    """Drones with at least one drifted payload (the fleet-wide drift view)."""
    return list(Drone.objects.filter(payload_states__drifted=True).distinct().order_by("name"))
