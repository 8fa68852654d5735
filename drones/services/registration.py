"""Registration: a machine joins the fleet with a join token and gets its own drone token.

Re-registering under a name that exists rotates that drone's token; the
intervals the answer carries come from `drones.services.heartbeat.drone_intervals`.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from drones.choices import DroneStatus, DroneType, ProvisioningStatus
from drones.events import drone_disconnect
from drones.models import Drone, JoinToken
from drones.sandbox import apply_sandbox, labels_with_sandbox, parse_sandbox_report, reserved_label_problem
from drones.selectors import DRONE_SUBJECT
from drones.services.join_tokens import join_token_check
from swarm.core.choices import TokenScope
from swarm.core.errors import ApiError
from swarm.core.services import api_token_issue, api_tokens_revoke_for_subject, audit_record


@dataclass(frozen=True)
class Registration:
    """What `POST /drones/register` returns: the drone, its new token and the intervals."""

    drone: Drone
    token: str
    created: bool


def drone_register(*, join_token: str, name: str, hostname: str = "", ip: str | None = None,
                   drone_type: str = DroneType.UNKNOWN, labels: list[str] | None = None, capacity: int = 1,
                   version: str = "", os: str = "", arch: str = "", sandbox: dict | None = None) -> Registration:
    """Register (or re-register) a drone with a join token and issue its drone token.

    Re-registering an existing name rotates the drone's token: every earlier
    token of that drone is revoked in the same transaction. `sandbox` is the
    agent's report of its build isolation (drones/sandbox.py); without one the
    drone keeps what it last reported (an older agent: nothing, so no builds).
    """
    problem = reserved_label_problem(labels)
    if problem:
        raise ApiError(f"labels: {problem}.", code="invalid", field="labels")
    report = parse_sandbox_report(sandbox) if sandbox is not None else None
    if drone_type not in DroneType.values:
        raise ApiError(f"drone_type must be one of {', '.join(DroneType.values)}.", code="invalid",
                       field="drone_type")
    with transaction.atomic():
        token = join_token_check(plaintext=join_token, field="join_token")
        token = JoinToken.objects.select_for_update().get(pk=token.pk)
        token = join_token_check(plaintext=join_token, field="join_token")  # re-checked under the lock (max uses)
        now = timezone.now()
        drone, created = Drone.objects.select_for_update().get_or_create(name=name, defaults={"registered_at": now})
        drone.hostname = hostname
        drone.ip = ip or None
        if not drone.drone_type_locked:
            drone.drone_type = drone_type
        drone.labels = labels_with_sandbox(labels, drone.sandbox, container_engine=drone.container_engine)
        if report is not None:
            apply_sandbox(drone, report=report)
        drone.capacity = capacity
        drone.agent_version = version
        drone.os = os
        drone.arch = arch
        drone.registered_at = now
        drone.last_seen_at = now
        drone.stop_requested = False
        if drone.status in (DroneStatus.OFFLINE, DroneStatus.STALE):
            drone.status = DroneStatus.ONLINE
        drone.save()
        api_tokens_revoke_for_subject(subject_type=DRONE_SUBJECT, subject_id=str(drone.pk))
        _, plaintext = api_token_issue(scope=TokenScope.DRONE, name=f"drone:{name}", subject_type=DRONE_SUBJECT,
                                       subject_id=str(drone.pk))
        JoinToken.objects.filter(pk=token.pk).update(uses=F("uses") + 1, last_drone=drone, registered_at=now)
        JoinToken.objects.filter(pk=token.pk).exclude(provisioning_status=ProvisioningStatus.HEARTBEAT).update(
            provisioning_status=ProvisioningStatus.REGISTERED)
        audit_record(actor=f"join_token:{token.name}", action="drone.register" if created else "drone.reregister",
                     obj=drone, detail={"join_token_id": token.pk})
        if not created:
            # A WebSocket opened with the old token must not outlive it.
            drone_id = drone.pk
            transaction.on_commit(lambda: drone_disconnect(drone_id))
    return Registration(drone=drone, token=plaintext, created=created)
