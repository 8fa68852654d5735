"""Reads of the drone fleet."""
import json
import time

from django.db.models import Avg, Count, Q, QuerySet

from drones.models import Drone, EscalationEvent, JoinToken
from drones.redis_client import key, redis_client
from swarm.core.authentication import DRONE_SUBJECT, drone_subject_id
from swarm.core.choices import TokenScope
from swarm.core.errors import ApiError, NotFound
from swarm.core.principals import Principal
from swarm.core.tokens import digests_match, split_prefix


def drone_id_for_principal(principal: Principal | None) -> int:
    """The id of the drone a drone token acts for, without a query.

    403 (JSON) for any other caller, 404 when the binding is malformed.
    """
    if principal is None or principal.scope != TokenScope.DRONE or principal.subject_type != DRONE_SUBJECT:
        raise ApiError("Only a drone token may call the agent endpoints.", code="permission_denied",
                       status_code=403)
    drone_id = drone_subject_id(scope=principal.scope, subject_type=principal.subject_type,
                                subject_id=principal.subject_id)
    if drone_id is None:
        raise NotFound("This drone token is not bound to a drone.")
    return drone_id


def drone_for_principal(principal: Principal | None) -> Drone:
    """The drone a drone token belongs to; 403 for other tokens, 404 when the drone is gone."""
    drone_id = drone_id_for_principal(principal)
    drone = Drone.objects.filter(pk=drone_id).first()
    if drone is None:
        raise NotFound("The drone this token belongs to no longer exists.")
    return drone


def drone_list() -> QuerySet[Drone]:
    """Every drone, by name."""
    return Drone.objects.select_related("hypervisor").order_by("name")


def drone_get(*, name: str) -> Drone:
    """One drone by name, or a JSON 404."""
    drone = Drone.objects.select_related("hypervisor").filter(name=name).first()
    if drone is None:
        raise NotFound(f"No drone named {name!r}.", field="name")
    return drone


def escalation_event_list(*, drone: Drone | None = None) -> QuerySet[EscalationEvent]:
    """Ladder steps, newest first (optionally of one drone)."""
    events = EscalationEvent.objects.select_related("drone")
    if drone is not None:
        events = events.filter(drone=drone)
    return events.order_by("-at", "-id")


def fleet_health_summary() -> dict:
    """Counts for the admin index cards: healthy / escalating / critical, average latency."""
    summary = Drone.objects.aggregate(
        total=Count("id"),
        healthy=Count("id", filter=Q(escalation_level=0)),
        escalating=Count("id", filter=Q(escalation_level__gte=1, escalation_level__lt=4)),
        critical=Count("id", filter=Q(escalation_level=4)),
        online=Count("id", filter=Q(status="online")),
        average_latency_ms=Avg("ping_latency_ms"),
    )
    return summary


def last_health_sweep() -> dict | None:
    """What the last health sweep did (`drones.services.health_sweep_record`) and how long ago; None if unknown."""
    try:
        raw = redis_client().get(key("health-sweep"))
    except Exception:  # noqa: BLE001 - the admin and /metrics answer without it
        return None
    if raw is None:
        return None
    record = json.loads(raw)
    record["age_seconds"] = max(time.time() - record["at"], 0.0)
    return record


def join_token_find(plaintext: str) -> JoinToken | None:
    """The join token a presented plaintext matches (usable or not), by prefix and constant-time digest."""
    prefix = split_prefix(plaintext or "")
    if prefix is None or not plaintext.startswith("swj_"):
        return None
    for token in JoinToken.objects.filter(prefix=prefix):
        if digests_match(plaintext, token.digest):
            return token
    return None
