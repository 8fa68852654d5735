"""The `drone` runtime's writes: queue an execution, offer it, let one drone claim it, keep its lease, sweep.

An execution spawned with `runtime=drone` waits `queued` (no token yet) with
the reason in `runtime_state.waiting_reason`: which labels it needs, how many
drones are connected, how many have those labels and a free slot. Matching
drones are told over their WebSocket (`execution_available`); a drone claims
it over its WebSocket (`execution_claim`, answered with `execution_start`) or,
when that is down, with `POST /api/v1/executions/request` — both call
`execution_drone_claim`, the one claim:

* this drone's claims are serialised (a transaction advisory lock on the
  drone), so its capacity holds however many claims it sends at once;
* the oldest queued execution whose `required_labels` ⊆ the drone's labels is
  taken with `SELECT … FOR UPDATE SKIP LOCKED` and assigned in the same
  transaction: a row another drone is claiming right now is passed over,
  never handed out twice;
* the metadata token and the supervisor's runtime token are minted then, for
  the claimer only, and leave in the `execution_start` payload.

The drone renews the execution's lease with every poll (the executions it
reports running). Beat's sweep (`drone_executions_sweep`, from
`executions_reap`) fails a claimed execution whose lease ran out with
`drone_lost` naming the drone, and refreshes the waiting reason of the
queued ones (offering them again). A queued execution times out like any
other (its deadline is set at spawn).
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from bundles.downloads import bundle_download_url
from drones.choices import DroneStatus
from drones.events import drone_send
from drones.models import Drone, labels_met_by
from swarm_agent.relay import distinct_endpoints
from workflows.choices import TERMINAL_STATUSES, ExecutionEventType, ExecutionStatus
from workflows.models import Execution
from workflows.runtimes.supervised import runtime_report_url
from workflows.services.executions import (
    execution_events_append,
    execution_fail,
    execution_lock,
    execution_move_to,
    execution_status_save,
    execution_token_issue,
    metadata_url,
)
from workflows.services.runtime_reports import runtime_token_issue, supervisor_deadline_seconds

logger = logging.getLogger(__name__)

DRONE_RUNTIME = "drone"
#: Statuses of an execution a drone holds (counted against its capacity).
HELD_STATUSES = (ExecutionStatus.PROVISIONING, ExecutionStatus.BOOTING, ExecutionStatus.RUNNING)
#: How long a sandbox whose boot reported the end may take to exit before the drone is told to stop it.
STOP_GRACE = timedelta(seconds=10)


def _connected_drones():
    """Drones that can hear of work now: WebSocket up, or heartbeating (online), and taking work."""
    return Drone.objects.taking_work().filter(Q(ws_connected=True) | Q(status=DroneStatus.ONLINE))


def drones_connected_count() -> int:
    """How many drones could take a drone-runtime execution now (for /readyz)."""
    return _connected_drones().count()


def _with_held(drones):
    return drones.annotate(held=Count("executions", filter=Q(executions__status__in=HELD_STATUSES)))


def drone_waiting_reason(*, required_labels: list[str]) -> dict:
    """Why a queued execution has no drone yet: its labels, and the drones connected, matching, with a free slot."""
    connected = _connected_drones()
    matching = _with_held(connected.with_labels(required_labels))
    counts = {"connected": connected.count(), "matching": matching.count(),
              "free": sum(1 for held, capacity in matching.values_list("held", "capacity") if held < capacity)}
    wanted = f"labels {', '.join(required_labels)}" if required_labels else "no labels"
    if counts["connected"] == 0:
        reason = f"no drone is connected (the execution needs {wanted})"
    elif counts["matching"] == 0:
        reason = (f"none of the {counts['connected']} connected drone(s) has {wanted}")
    elif counts["free"] == 0:
        reason = f"all {counts['matching']} connected drone(s) with {wanted} are at capacity"
    else:
        reason = f"offered to {counts['free']} drone(s) with {wanted} and a free slot; waiting for one to claim it"
    return {"reason": reason, "required_labels": list(required_labels), "drones_connected": counts["connected"],
            "drones_matching": counts["matching"], "drones_with_free_slot": counts["free"]}


def drone_execution_enqueue(*, execution: Execution) -> None:
    """Put a (row-locked, pending) execution in the drone queue: `queued`, the reason recorded, drones told."""
    waiting = drone_waiting_reason(required_labels=execution.required_labels)
    execution_move_to(execution=execution, status=ExecutionStatus.QUEUED)
    execution.runtime_state = {"waiting": waiting}
    execution_status_save(execution=execution)
    execution_events_append(execution=execution, events=[{
        "type": ExecutionEventType.QUEUED, "message": f"waiting for a drone: {waiting['reason']}", "data": waiting}])
    execution_id = execution.pk
    transaction.on_commit(lambda: drone_execution_offer(execution_id=execution_id))


def drone_execution_offer(*, execution_id: int, limit: int | None = None) -> int:
    """Tell connected drones with the labels and a free slot that the execution waits; returns how many."""
    execution = Execution.objects.filter(pk=execution_id, status=ExecutionStatus.QUEUED).only(
        "pk", "required_labels").first()
    if execution is None:
        return 0
    limit = limit or settings.SWARM_DRONE_EXECUTION_OFFER_LIMIT
    candidates = [pk for pk, held, capacity in
                  _with_held(_connected_drones().filter(ws_connected=True).with_labels(execution.required_labels))
                  .order_by("pk").values_list("pk", "held", "capacity") if held < capacity][:limit]
    for drone_id in candidates:
        try:
            drone_send(drone_id, {"type": "execution_available", "execution_id": execution_id})
        except Exception:  # noqa: BLE001 - the agent also polls: a lost offer only delays
            logger.warning("could not offer execution %s to drone %s", execution_id, drone_id, exc_info=True)
    return len(candidates)


def _lock_drone_claims(drone_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"swarm:drone-executions:{drone_id}"])


def execution_drone_claim(*, drone_id: int, execution_id: int | None = None, sandbox: str = "") -> dict | None:
    """Hand the oldest queued execution this drone may run (or the one named) to it; the start payload, or None.

    None when the drone is gone, paused, draining or offline, at capacity, or
    no queued execution fits (or the named one was taken by another drone).
    """
    now = timezone.now()
    with transaction.atomic():
        _lock_drone_claims(drone_id)
        drone = Drone.objects.taking_work().filter(pk=drone_id).only("pk", "name", "labels", "capacity").first()
        if drone is None:
            return None
        held = Execution.objects.filter(drone_id=drone.pk, status__in=HELD_STATUSES).count()
        if held >= drone.capacity:
            return None
        candidates = Execution.objects.filter(runtime=DRONE_RUNTIME, status=ExecutionStatus.QUEUED,
                                              drone__isnull=True, **labels_met_by(drone.labels))
        if execution_id is not None:
            candidates = candidates.filter(pk=execution_id)
        picked = candidates.order_by("pk").select_for_update(skip_locked=True, of=("self",)).values_list(
            "pk", flat=True).first()
        if picked is None:
            return None
        execution = execution_lock(execution_id=picked)
        execution_move_to(execution=execution, status=ExecutionStatus.PROVISIONING)
        execution.drone_id = drone.pk
        execution.lease_renewed_at = now
        execution.runtime_state = {"drone": drone.name, "drone_id": drone.pk, "claimed_at": now.isoformat(),
                                   "sandbox": sandbox, "waited": (execution.runtime_state or {}).get("waiting")}
        execution_status_save(execution=execution)
        Execution.objects.filter(pk=execution.pk).update(drone_id=drone.pk, lease_renewed_at=now)
        token = execution_token_issue(execution=execution)
        runtime_token = runtime_token_issue(execution=execution)
        execution_events_append(execution=execution, events=[{
            "type": ExecutionEventType.RUNTIME_STARTED,
            "message": f"drone runtime: claimed by drone {drone.name}" + (f" (sandbox: {sandbox})" if sandbox else ""),
            "data": {"drone": drone.name, "drone_id": drone.pk, "sandbox": sandbox,
                     "required_labels": execution.required_labels},
        }])
        bundle_url = bundle_download_url(execution.version.bundle)
        meta_url = metadata_url()
    return {
        "execution_id": execution.pk, "metadata_url": meta_url, "token": token, "runtime_token": runtime_token,
        "report_url": runtime_report_url(execution),
        "endpoints": [list(endpoint) for endpoint in distinct_endpoints([meta_url, bundle_url])],
        "deadline_seconds": supervisor_deadline_seconds(execution=execution),
        "cache_budget_mb": settings.SWARM_PROCESS_CACHE_BUDGET_MB,
        "lease_seconds": settings.SWARM_DRONE_EXECUTION_LEASE_SECONDS,
    }


def drone_executions_renew(*, drone_id: int, running_execution_ids: list[int]) -> list[int]:
    """Renew the leases of the executions this drone reports running; returns those it must stop.

    To stop: ones that are not its own (another drone's, or none), cancelled or
    timed out ones, and ones that ended otherwise (failed `drone_lost`, or the
    boot reported its exit) more than STOP_GRACE ago — a sandbox whose boot
    has just reported `exited` is left to end by itself.
    """
    reported = set(running_execution_ids)
    if not reported:
        return []
    now = timezone.now()
    Execution.objects.filter(pk__in=reported, drone_id=drone_id, status__in=HELD_STATUSES).update(
        lease_renewed_at=now)
    keep = set(Execution.objects.filter(pk__in=reported, drone_id=drone_id).filter(
        Q(status__in=HELD_STATUSES)
        | Q(status__in=(ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED), finished_at__gt=now - STOP_GRACE))
        .values_list("pk", flat=True))
    return sorted(reported - keep)


def drone_execution_stop(*, execution: Execution) -> None:
    """Tell the drone holding a cancelled or timed-out execution to kill it (its next poll is told too)."""
    if execution.drone_id:
        try:
            drone_send(execution.drone_id, {"type": "execution_cancel", "execution_id": execution.pk})
        except Exception:  # noqa: BLE001 - the drone's next poll learns it is no longer its own
            logger.warning("could not tell drone %s to stop execution %s", execution.drone_id, execution.pk,
                           exc_info=True)


def drone_executions_sweep() -> dict:
    """Beat: fail claimed executions whose drone stopped renewing their lease; refresh and re-offer queued ones."""
    now = timezone.now()
    lease = timedelta(seconds=settings.SWARM_DRONE_EXECUTION_LEASE_SECONDS)
    lost = 0
    expired = (Execution.objects.filter(runtime=DRONE_RUNTIME, status__in=HELD_STATUSES,
                                        lease_renewed_at__lt=now - lease)
               .select_related("drone").only("pk", "lease_renewed_at", "drone__name", "drone__last_heartbeat_at"))
    for execution in expired:
        name = execution.drone.name if execution.drone else "(deleted)"
        heartbeat = execution.drone.last_heartbeat_at if execution.drone else None
        silent = (now - execution.lease_renewed_at).total_seconds()
        reason = (f"drone_lost: drone {name} stopped renewing the execution's lease "
                  f"({silent:.0f} s without word, the lease is {lease.total_seconds():.0f} s"
                  + (f"; last heartbeat {(now - heartbeat).total_seconds():.0f} s ago" if heartbeat else "") + ")")
        before = Execution.objects.filter(pk=execution.pk).values_list("status", flat=True).first()
        failed = execution_fail(execution_id=execution.pk, reason=reason,
                                data={"code": "drone_lost", "drone": name, "seconds_silent": round(silent, 1)})
        lost += int(before not in TERMINAL_STATUSES and failed.status == ExecutionStatus.FAILED)
    offered = 0
    for execution in Execution.objects.filter(runtime=DRONE_RUNTIME, status=ExecutionStatus.QUEUED):
        waiting = drone_waiting_reason(required_labels=execution.required_labels)
        if (execution.runtime_state or {}).get("waiting") != waiting:
            with transaction.atomic():
                locked = execution_lock(execution_id=execution.pk)
                if locked.status == ExecutionStatus.QUEUED:
                    locked.runtime_state = {"waiting": waiting}
                    locked.save(update_fields=["runtime_state"])
        offered += drone_execution_offer(execution_id=execution.pk) > 0
    return {"drone_lost": lost, "queued_offered": offered}
