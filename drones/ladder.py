"""Health evaluation and the self-healing escalation ladder (run by beat through drones.tasks).

A sweep over the fleet (`fleet_evaluate`) costs nothing per healthy drone:
the pings that are due go out in one batch and are then recorded in one
statement, an unanswered previous ping counted as missed
(drones.services.presence.drones_ping_due); one statement marks the WebSocket down
where pings have gone unanswered (an ASGI worker killed mid-connection never
clears the flag); one marks newly healthy drones; one query finds the drones
that need a step — a status to change, a drone that is unhealthy or on the
ladder — and only those are evaluated, one at a time, under
`SELECT … FOR UPDATE SKIP LOCKED` on its row, so two beat workers never act
on the same drone: the second one skips it, and when it comes back later the
cooldown (read under the lock) holds it off.

    L1 restart_service  → L2 hard_restart → L3 reboot_container (lxc/qemu only) → L4 alert_admin

Each level is tried SWARM_ESCALATION_ATTEMPTS_PER_LEVEL times; after the
n-th action at a level the ladder waits base × 2^(n-1) seconds (capped)
before acting again. L4 repeats with the same doubling. The level resets
after SWARM_ESCALATION_RESET_AFTER seconds of health. Every action and
every reset writes an EscalationEvent.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from drones.alerts import alert_admin
from drones.choices import (
    LEVEL_ACTIONS,
    REBOOTABLE_TYPES,
    DroneStatus,
    EscalationLevel,
    EscalationResult,
)
from drones.events import drone_changed, drone_send, escalation_stepped
from drones.hypervisors import HypervisorError, client_for
from drones.models import Drone, EscalationEvent
from drones.remote import RemoteCommandError, ssh_run
from drones.services.presence import (
    drone_ping_send,
    drones_ping_due,
    drones_websocket_silent_mark,
    health_sweep_record,
)

logger = logging.getLogger(__name__)

HOLD_STATUSES = (DroneStatus.PAUSED,)


@dataclass(frozen=True)
class Evaluation:
    """What one health check did to one drone (for logs and tests)."""

    drone_id: int
    outcome: str  # locked | paused | healthy | reset | waiting | acted
    level: int = 0
    detail: str = ""


def cooldown_seconds(*, level: int, attempts: int) -> float:
    """The wait after the `attempts`-th action at `level`: base × 2^(attempts-1), capped."""
    base = float(settings.SWARM_ESCALATION_COOLDOWNS.get(level, 30.0))
    return min(base * (2 ** max(0, attempts - 1)), float(settings.SWARM_ESCALATION_COOLDOWN_CAP))


def heartbeat_overdue_after() -> timedelta:
    """How long without a heartbeat makes a drone stale."""
    return timedelta(seconds=settings.SWARM_DRONE_HEARTBEAT_INTERVAL * settings.SWARM_DRONE_STALE_AFTER_MISSED)


def liveness_status(drone: Drone, now: datetime) -> str:
    """online, stale (2 missed heartbeats) or offline, from the last heartbeat."""
    interval = settings.SWARM_DRONE_HEARTBEAT_INTERVAL
    last = drone.last_heartbeat_at or drone.registered_at
    silence = (now - last).total_seconds()
    if silence > interval * settings.SWARM_DRONE_OFFLINE_AFTER_MISSED:
        return DroneStatus.OFFLINE
    if silence > interval * settings.SWARM_DRONE_STALE_AFTER_MISSED:
        return DroneStatus.STALE
    return DroneStatus.ONLINE


def _ping_due(drone: Drone, now: datetime) -> bool:
    if drone.last_ping_at is None:
        return True
    return (now - drone.last_ping_at).total_seconds() >= settings.SWARM_DRONE_PING_INTERVAL


def _ping_unanswered(drone: Drone) -> bool:
    return drone.last_ping_at is not None and (drone.last_pong_at is None or drone.last_pong_at < drone.last_ping_at)


def unhealthy_reason(drone: Drone, liveness: str) -> str | None:
    """Why the drone needs healing, or None when it is healthy."""
    if liveness != DroneStatus.ONLINE:
        last = drone.last_heartbeat_at.isoformat() if drone.last_heartbeat_at else "never"
        return f"{liveness}: no heartbeat since {last}"
    if drone.missed_pongs >= settings.SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS:
        return f"{drone.missed_pongs} missed pongs (WebSocket {'up' if drone.ws_connected else 'down'})"
    return None


def next_level(drone: Drone) -> int:
    """The level the next action belongs to (repeat the current one, or climb)."""
    level = drone.escalation_level
    if level == EscalationLevel.HEALTHY:
        return EscalationLevel.RESTART_SERVICE
    if level == EscalationLevel.ALERT_ADMIN or drone.escalation_attempts < settings.SWARM_ESCALATION_ATTEMPTS_PER_LEVEL:
        return level
    climbed = level + 1
    if climbed == EscalationLevel.REBOOT_CONTAINER and drone.drone_type not in REBOOTABLE_TYPES:
        # Bare metal and unknown machines are never rebooted by the ladder.
        climbed = EscalationLevel.ALERT_ADMIN
    return climbed


def websocket_answering(drone: Drone, now: datetime) -> bool:
    """The WebSocket is believed up and has proved it lately (a pong, or the connection itself, is recent).

    A flag left up by a server worker that died without closing the
    connection carries nothing; pings would have gone unanswered for
    SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS ping intervals.
    """
    if not drone.ws_connected:
        return False
    proof = max((moment for moment in (drone.last_pong_at, drone.ws_connected_at) if moment), default=None)
    window = settings.SWARM_DRONE_PING_INTERVAL * settings.SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS
    return proof is not None and (now - proof).total_seconds() <= max(window, settings.SWARM_DRONE_PONG_TIMEOUT)


def _restart(drone: Drone, *, hard: bool) -> tuple[str, str]:
    """Over the WebSocket when it answers; else over SSH when configured; else over the WebSocket if it is up."""
    command = "hard_restart" if hard else "restart_service"
    now = timezone.now()
    message = {"type": command, "id": f"escalation-{drone.pk}-{int(now.timestamp())}"}
    if websocket_answering(drone, now) or (drone.ws_connected and not drone.ssh_configured):
        drone_send(drone.pk, message)
        return EscalationResult.SENT, f"{command} sent over the agent's WebSocket"
    if drone.ssh_configured:
        remote_command = drone.ssh_hard_restart_command if hard else drone.ssh_restart_command
        try:
            output = ssh_run(drone=drone, command=remote_command)
        except RemoteCommandError as error:
            return EscalationResult.FAILED, f"SSH {drone.ssh_user}@{drone.ssh_host}: {error}"
        return EscalationResult.OK, f"ran over SSH on {drone.ssh_host}: {remote_command} {output}".strip()
    return EscalationResult.FAILED, "WebSocket down and no SSH configured: nothing could carry the command"


def _reboot(drone: Drone) -> tuple[str, str]:
    if drone.drone_type not in REBOOTABLE_TYPES:  # defensive: next_level never gets here for them
        return EscalationResult.SKIPPED, f"{drone.drone_type} drones are never rebooted"
    if not drone.hypervisor_configured:
        return EscalationResult.FAILED, "no hypervisor, node and vmid configured for this drone"
    try:
        upid = client_for(drone.hypervisor).reboot_guest(node=drone.hypervisor_node, kind=drone.drone_type,
                                                         vmid=drone.hypervisor_vmid)
    except (HypervisorError, ValueError) as error:
        return EscalationResult.FAILED, f"{drone.hypervisor}: {error}"
    return EscalationResult.OK, (f"{drone.hypervisor} rebooted {drone.drone_type} {drone.hypervisor_vmid} "
                                 f"on {drone.hypervisor_node}: {upid}")


def perform(drone: Drone, level: int, reason: str) -> tuple[str, str]:
    """Carry out the action of `level`; returns (result, detail)."""
    if level == EscalationLevel.RESTART_SERVICE:
        return _restart(drone, hard=False)
    if level == EscalationLevel.HARD_RESTART:
        return _restart(drone, hard=True)
    if level == EscalationLevel.REBOOT_CONTAINER:
        return _reboot(drone)
    delivered, detail = alert_admin(drone=drone, reason=reason)
    return (EscalationResult.OK if delivered else EscalationResult.FAILED), detail


def drone_evaluate(*, drone_id: int, now: datetime | None = None, ping: bool = True) -> Evaluation:
    """Check one drone's health and take at most one ladder step, under its row lock.

    With `ping` (a drone checked on its own) a due ping is sent and an
    unanswered one counted here; a fleet sweep has done both for every drone
    already (`drones_ping_due`).
    """
    with transaction.atomic():
        drone = Drone.objects.select_for_update(skip_locked=True, of=("self",)).select_related("hypervisor").filter(
            pk=drone_id).first()
        if drone is None:
            return Evaluation(drone_id, "locked", detail="another worker holds this drone (or it is gone)")
        now = now or timezone.now()
        update = ["status", "missed_pongs", "healthy_since", "escalation_level", "escalation_attempts",
                  "last_escalation_at"]
        status_before = drone.status
        liveness = liveness_status(drone, now)
        if drone.status not in (DroneStatus.PAUSED, DroneStatus.DRAINING):
            drone.status = liveness
        if drone.status != status_before:
            transaction.on_commit(lambda: drone_changed(drone.pk, status=drone.status))
        if drone.status in HOLD_STATUSES:
            drone.save(update_fields=update)
            return Evaluation(drone.pk, "paused", drone.escalation_level)

        send_ping = ping and _ping_due(drone, now)
        if send_ping and _ping_unanswered(drone):
            drone.missed_pongs += 1
        reason = unhealthy_reason(drone, liveness)
        evaluation = _step(drone, now, reason)
        drone.save(update_fields=update)
        if send_ping:
            transaction.on_commit(lambda: drone_ping_send(drone=drone))
    if evaluation.outcome in ("acted", "reset"):
        logger.warning("drone %s: %s L%s %s", drone.name, evaluation.outcome, evaluation.level, evaluation.detail)
    return evaluation


def _step(drone: Drone, now: datetime, reason: str | None) -> Evaluation:
    if reason is None:
        drone.healthy_since = drone.healthy_since or now
        healthy_for = (now - drone.healthy_since).total_seconds()
        if drone.escalation_level and healthy_for >= settings.SWARM_ESCALATION_RESET_AFTER:
            previous = drone.escalation_level
            drone.escalation_level = EscalationLevel.HEALTHY
            drone.escalation_attempts = 0
            event = EscalationEvent.objects.create(drone=drone, level=EscalationLevel.HEALTHY, action="reset",
                                                   result=EscalationResult.RESET, at=now,
                                                   detail=f"healthy for {healthy_for:.0f} s; back from L{previous}")
            transaction.on_commit(lambda: escalation_stepped(event))
            return Evaluation(drone.pk, "reset", 0)
        return Evaluation(drone.pk, "healthy", drone.escalation_level)

    drone.healthy_since = None
    if drone.escalation_level and drone.last_escalation_at is not None:
        wait = cooldown_seconds(level=drone.escalation_level, attempts=drone.escalation_attempts)
        if now < drone.last_escalation_at + timedelta(seconds=wait):
            return Evaluation(drone.pk, "waiting", drone.escalation_level, f"cooldown {wait:g} s")
    level = next_level(drone)
    drone.escalation_attempts = drone.escalation_attempts + 1 if level == drone.escalation_level else 1
    drone.escalation_level = level
    drone.last_escalation_at = now
    result, detail = perform(drone, level, reason)
    event = EscalationEvent.objects.create(drone=drone, level=level, action=LEVEL_ACTIONS[level], result=result,
                                           detail=f"{reason}. {detail}"[:4000], at=now)
    transaction.on_commit(lambda: escalation_stepped(event))
    return Evaluation(drone.pk, "acted", level, detail)


def _live(now: datetime) -> Q:
    """Drones whose heartbeats make them online (see `liveness_status`)."""
    stale_before = now - heartbeat_overdue_after()
    return Q(last_heartbeat_at__gte=stale_before) | Q(last_heartbeat_at__isnull=True, registered_at__gte=stale_before)


def _steady(now: datetime) -> Q:
    """Drones a health check leaves as they are: online by their heartbeats, answering pings, off the ladder."""
    return (_live(now) & Q(status__in=(DroneStatus.ONLINE, DroneStatus.DRAINING), escalation_level=0,
                           missed_pongs__lt=settings.SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS))


def drones_mark_healthy(now: datetime) -> int:
    """Steady drones not yet marked healthy get `healthy_since` in one statement (what `_step` does one by one)."""
    return Drone.objects.filter(_steady(now), healthy_since__isnull=True).update(healthy_since=now)


def drones_needing_a_step(now: datetime) -> list[int]:
    """Drones whose health check would change something, to be evaluated one by one.

    Every drone but the paused and the steady ones (marked healthy already):
    a status that is not the one its heartbeats give, too many missed pongs,
    or a rung of the ladder to climb or to reset.
    """
    return list(
        Drone.objects.exclude(status__in=HOLD_STATUSES)
        .exclude(_steady(now) & Q(healthy_since__isnull=False))
        .values_list("pk", flat=True).order_by("pk")
    )


def fleet_evaluate(now: datetime | None = None) -> list[Evaluation]:
    """One health check over the fleet (what the beat task runs); the evaluations of the drones that needed one.

    What the sweep did is kept for /metrics and the admin (`health_sweep_record`).
    """
    started = time.perf_counter()
    now = now or timezone.now()
    pinged = []
    try:
        pinged = drones_ping_due(now=now)
    except Exception:  # noqa: BLE001 - pings lost to a Redis outage must not stop the health check
        logger.exception("pinging the fleet failed")
    drones_websocket_silent_mark()
    drones_mark_healthy(now)
    evaluations = []
    for drone_id in drones_needing_a_step(now):
        try:
            evaluations.append(drone_evaluate(drone_id=drone_id, now=now, ping=False))
        except Exception:  # noqa: BLE001 - one drone's failure must not stop the others' checks
            logger.exception("health check of drone %s failed", drone_id)
    health_sweep_record(seconds=time.perf_counter() - started, pinged=len(pinged), evaluated=len(evaluations),
                        acted=sum(1 for evaluation in evaluations if evaluation.outcome == "acted"))
    return evaluations
