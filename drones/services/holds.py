"""Operator holds and overrides: pause, drain, resume, a fixed drone type, a reset of the escalation ladder.

Each writes an audit record; a reset also writes an escalation event, like
every other step of the ladder (drones/ladder.py).
"""
from __future__ import annotations

from django.db import transaction

from drones.choices import DroneStatus, DroneType, EscalationLevel, EscalationResult
from drones.events import drone_changed, escalation_stepped
from drones.models import Drone, EscalationEvent
from swarm.core.errors import ApiError
from swarm.core.services import audit_record


def _set_status(*, drone: Drone, status: str, actor) -> Drone:
    drone.status = status
    drone.save(update_fields=["status"])
    transaction.on_commit(lambda: drone_changed(drone.pk, status=status))
    audit_record(actor=actor, action=f"drone.{status}", obj=drone)
    return drone


def drone_pause(*, drone: Drone, actor="system") -> Drone:
    """Hold the drone: its heartbeats answer `pause` and the ladder leaves it alone."""
    return _set_status(drone=drone, status=DroneStatus.PAUSED, actor=actor)


def drone_drain(*, drone: Drone, actor="system") -> Drone:
    """Let the drone finish its work but take no new work (`drain`)."""
    return _set_status(drone=drone, status=DroneStatus.DRAINING, actor=actor)


def drone_resume(*, drone: Drone, actor="system") -> Drone:
    """Back to `run`; the next health check decides online/stale/offline."""
    drone.stop_requested = False
    drone.save(update_fields=["stop_requested"])
    return _set_status(drone=drone, status=DroneStatus.ONLINE, actor=actor)


def drone_set_type(*, drone: Drone, drone_type: str, actor="system") -> Drone:
    """Override the detected drone type (the agent's detection no longer changes it)."""
    if drone_type not in DroneType.values:
        raise ApiError(f"drone_type must be one of {', '.join(DroneType.values)}.", code="invalid",
                       field="drone_type")
    drone.drone_type = drone_type
    drone.drone_type_locked = True
    drone.save(update_fields=["drone_type", "drone_type_locked"])
    audit_record(actor=actor, action="drone.set_type", obj=drone, detail={"drone_type": drone_type})
    return drone


def drone_reset_escalation(*, drone: Drone, actor="system") -> Drone:
    """Put the drone back to L0 by hand (recorded as an escalation event)."""
    with transaction.atomic():
        locked = Drone.objects.select_for_update().get(pk=drone.pk)
        previous = locked.escalation_level
        locked.escalation_level = EscalationLevel.HEALTHY
        locked.escalation_attempts = 0
        locked.missed_pongs = 0
        locked.save(update_fields=["escalation_level", "escalation_attempts", "missed_pongs"])
        event = EscalationEvent.objects.create(drone=locked, level=EscalationLevel.HEALTHY, action="reset",
                                               result=EscalationResult.RESET,
                                               detail=f"reset by {actor} from L{previous}")
        transaction.on_commit(lambda: escalation_stepped(event))
        audit_record(actor=actor, action="drone.reset_escalation", obj=locked, detail={"from_level": previous})
    return locked
