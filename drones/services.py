"""Writes of the drone fleet: join tokens, registration, heartbeats, ping/pong, operator holds."""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from drones.choices import DroneAction, DroneStatus, DroneType, EscalationLevel, EscalationResult, ProvisioningStatus
from drones.events import drone_disconnect, drones_send
from drones.heartbeat_hooks import run_heartbeat_hooks_async
from drones.models import Drone, EscalationEvent, JoinToken
from drones.redis_client import key, redis_client
from drones.selectors import DRONE_SUBJECT, join_token_find
from swarm.core import async_db
from swarm.core.choices import TokenScope
from swarm.core.errors import ApiError
from swarm.core.secret_box import SecretUndecryptable, encrypt_text
from swarm.core.services import api_token_issue, api_tokens_revoke_for_subject, audit_record
from swarm.core.tokens import generate_token, split_prefix, token_digest

logger = logging.getLogger(__name__)

PING_RECORD_TTL = 300
MAX_METRICS_BYTES = 16 * 1024


# --- Join tokens ---------------------------------------------------------------


def join_token_issue(*, name: str, expires_at: datetime | None = None, max_uses: int | None = None,
                     created_by=None) -> tuple[JoinToken, str]:
    """Create a join token; returns it with its plaintext (`swj_…`), which is never stored."""
    if not name or len(name) > 100:
        raise ApiError("A join token needs a name of 1-100 characters.", code="invalid", field="name")
    if max_uses is not None and max_uses < 1:
        raise ApiError("max_uses must be at least 1.", code="invalid", field="max_uses")
    generated = generate_token("swj")
    token = JoinToken.objects.create(name=name, prefix=generated.prefix, digest=generated.digest,
                                     plaintext_encrypted=encrypt_text(generated.plaintext),
                                     expires_at=expires_at, max_uses=max_uses, created_by=created_by)
    audit_record(actor=created_by.get_username() if created_by else "system", action="join_token.issue", obj=token)
    return token, generated.plaintext


def join_token_revoke(*, token: JoinToken, actor: str = "system") -> JoinToken:
    """Revoke a join token; registrations with it are refused from now on."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="join_token.revoke", obj=token)
    return token


def join_token_reuse(*, name: str) -> tuple[JoinToken, str]:
    """The usable join token called `name` with its plaintext, or a new one (`issue_join_token --reuse`).

    Tokens whose plaintext can no longer be decrypted (the secret key changed)
    are revoked and replaced. Drones that already registered keep their tokens.
    """
    with transaction.atomic():
        for token in JoinToken.objects.select_for_update().filter(name=name, revoked_at__isnull=True).order_by(
                "-created_at"):
            try:
                plaintext = token.plaintext
            except SecretUndecryptable as error:
                logger.warning("join token %s is replaced: %s", token.pk, error)
                plaintext = ""
            if token.is_usable and plaintext:
                return token, plaintext
            join_token_revoke(token=token, actor="system:reuse")
        return join_token_issue(name=name)


def join_token_check(plaintext: str, *, field: str = "token") -> JoinToken:
    """The usable join token matching `plaintext`, or a 401/403 JSON error saying why not."""
    if not plaintext:
        raise ApiError("A join token is required.", code="missing_field", field=field, status_code=401)
    token = join_token_find(plaintext)
    if token is None:
        raise ApiError("Unknown join token.", code="authentication_failed", field=field, status_code=401)
    if token.revoked_at is not None:
        raise ApiError("This join token was revoked.", code="token_revoked", field=field, status_code=403)
    if token.expires_at is not None and token.expires_at <= timezone.now():
        raise ApiError("This join token has expired.", code="token_expired", field=field, status_code=403)
    if token.max_uses is not None and token.uses >= token.max_uses:
        raise ApiError("This join token has no uses left.", code="token_used_up", field=field, status_code=403)
    return token


def join_token_mark_script_fetched(*, token: JoinToken) -> None:
    """Provisioning progress: the bootstrap script was downloaded with this token."""
    JoinToken.objects.filter(pk=token.pk, provisioning_status=ProvisioningStatus.ISSUED).update(
        provisioning_status=ProvisioningStatus.SCRIPT_FETCHED, script_fetched_at=timezone.now())


# --- Registration and heartbeat -------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What `POST /drones/register` returns: the drone, its new token and the intervals."""

    drone: Drone
    token: str
    created: bool


def drone_register(*, join_token: str, name: str, hostname: str = "", ip: str | None = None,
                   drone_type: str = DroneType.UNKNOWN, labels: list[str] | None = None, capacity: int = 1,
                   version: str = "", os: str = "", arch: str = "") -> Registration:
    """Register (or re-register) a drone with a join token and issue its drone token.

    Re-registering an existing name rotates the drone's token: every earlier
    token of that drone is revoked in the same transaction.
    """
    if drone_type not in DroneType.values:
        raise ApiError(f"drone_type must be one of {', '.join(DroneType.values)}.", code="invalid",
                       field="drone_type")
    with transaction.atomic():
        token = join_token_check(join_token, field="join_token")
        token = JoinToken.objects.select_for_update().get(pk=token.pk)
        token = join_token_check(join_token, field="join_token")  # re-checked under the lock (max uses)
        now = timezone.now()
        drone, created = Drone.objects.select_for_update().get_or_create(name=name, defaults={"registered_at": now})
        drone.hostname = hostname
        drone.ip = ip or None
        if not drone.drone_type_locked:
            drone.drone_type = drone_type
        drone.labels = sorted(set(labels or []))
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


def drone_intervals() -> dict:
    """The server-set intervals every registration and heartbeat response carries."""
    return {
        "heartbeat_interval": settings.SWARM_DRONE_HEARTBEAT_INTERVAL,
        "ping_interval": settings.SWARM_DRONE_PING_INTERVAL,
    }


def action_for(status: str, stop_requested: bool) -> str:
    """The action a heartbeat response tells the agent to take."""
    if stop_requested:
        return DroneAction.STOP
    if status == DroneStatus.PAUSED:
        return DroneAction.PAUSE
    if status == DroneStatus.DRAINING:
        return DroneAction.DRAIN
    return DroneAction.RUN


# One statement per heartbeat: find the drone through its token (prefix + sha256
# digest, usable, drone-scoped; the scalar subquery runs once and the drone is
# then an index hit), record the heartbeat, bring a stale/offline drone back
# online, remember the first heartbeat and read back what the answer needs.
# `synchronous_commit` is relaxed for this statement only: losing the last
# heartbeat on a database crash costs nothing (the next one comes within an
# interval), and not waiting for the WAL flush halves the endpoint's latency.
HEARTBEAT_SQL = """
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE drones_drone AS drone SET
    last_heartbeat_at = %(now)s,
    last_seen_at = %(now)s,
    metrics = %(metrics)s::jsonb,
    status = CASE WHEN drone.status IN ('stale', 'offline') THEN 'online' ELSE drone.status END,
    first_heartbeat_at = COALESCE(drone.first_heartbeat_at, %(now)s)
FROM relaxed
WHERE drone.id = (
    SELECT CASE WHEN token.subject_id ~ '^[0-9]{1,18}$' THEN CAST(token.subject_id AS bigint) END
    FROM core_apitoken AS token
    WHERE token.prefix = %(prefix)s AND token.digest = %(digest)s AND token.scope = 'drone'
      AND token.subject_type = 'drone' AND token.revoked_at IS NULL
      AND (token.expires_at IS NULL OR token.expires_at > %(now)s)
)
RETURNING drone.id, drone.status, drone.stop_requested, drone.first_heartbeat_at = %(now)s
"""


FIRST_HEARTBEAT_SQL = f"""
UPDATE {JoinToken._meta.db_table} SET provisioning_status = %(heartbeat)s, first_heartbeat_at = %(now)s
WHERE last_drone_id = %(drone)s AND provisioning_status <> %(heartbeat)s
"""


@dataclass(frozen=True)
class HeartbeatStatement:
    """The parameters of HEARTBEAT_SQL for one heartbeat, ready for any psycopg cursor (sync or async)."""

    params: dict

    @property
    def now(self) -> datetime:
        return self.params["now"]


def heartbeat_statement(*, token: str, metrics) -> HeartbeatStatement | None:
    """Check the heartbeat's input and build its statement; None when the token is malformed.

    Raises ApiError for bad metrics. Shared by the view and the event-loop
    fast path (drones/fastpath.py), so both record exactly the same thing.
    """
    if not isinstance(metrics, dict):
        raise ApiError("metrics must be a JSON object.", code="invalid", field="metrics")
    encoded_metrics = json.dumps(metrics)
    if len(encoded_metrics) > MAX_METRICS_BYTES:
        raise ApiError(f"metrics must stay under {MAX_METRICS_BYTES} bytes of JSON.", code="too_large",
                       field="metrics")
    prefix = split_prefix(token or "")
    if prefix is None:
        return None
    return HeartbeatStatement({"now": timezone.now(), "metrics": encoded_metrics, "prefix": prefix,
                               "digest": token_digest(token)})


def heartbeat_answer(row) -> tuple[dict, bool]:
    """The heartbeat answer (with `drone_id`) from HEARTBEAT_SQL's row, and whether it was the first heartbeat."""
    drone_id, status, stop_requested, first = row
    return ({"drone_id": drone_id, "action": action_for(status, stop_requested), "status": status,
             **drone_intervals()}, bool(first))


def first_heartbeat_params(*, drone_id: int, now: datetime) -> dict:
    """FIRST_HEARTBEAT_SQL's parameters: the join token that provisioned the drone reaches its last step."""
    return {"heartbeat": ProvisioningStatus.HEARTBEAT.value, "now": now, "drone": drone_id}


def drone_heartbeat(*, token: str, metrics: dict) -> dict | None:
    """Record a heartbeat for the drone a drone token belongs to, in one statement.

    Returns `{drone_id, action, status, intervals…}`, or None when the token
    is not a usable drone token of an existing drone (the caller then works out
    the right 401/403/404 on the slow path). The first heartbeat also moves
    the join token's provisioning status on.
    """
    statement = heartbeat_statement(token=token, metrics=metrics)
    if statement is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(HEARTBEAT_SQL, statement.params)
        row = cursor.fetchone()
        if row is None:
            return None
        answer, first = heartbeat_answer(row)
        if first:
            cursor.execute(FIRST_HEARTBEAT_SQL, first_heartbeat_params(drone_id=answer["drone_id"],
                                                                       now=statement.now))
    return answer


async def drone_heartbeat_async(*, token: str, body: dict) -> dict | None:
    """`drone_heartbeat` plus the heartbeat hooks, on the event loop's async connection (drones/fastpath.py).

    Same checks and statement as the view; the hooks run in their async
    variants. Raises ApiError for bad metrics; returns None when the token is
    not a usable drone token of an existing drone.
    """
    statement = heartbeat_statement(token=token, metrics=body.get("metrics", {}))
    if statement is None:
        return None
    pool = await async_db.pool()
    async with pool.connection() as connection:
        cursor = await connection.execute(HEARTBEAT_SQL, statement.params)
        row = await cursor.fetchone()
        if row is None:
            return None
        answer, first = heartbeat_answer(row)
        if first:
            await connection.execute(FIRST_HEARTBEAT_SQL, first_heartbeat_params(drone_id=answer["drone_id"],
                                                                                 now=statement.now))
        answer.update(await run_heartbeat_hooks_async(connection, answer["drone_id"], body))
    return answer


# --- WebSocket presence, ping and pong -------------------------------------------


def drone_ws_connected(*, drone_id: int) -> datetime:
    """The agent's WebSocket is up (called by the consumer); returns the connection time."""
    now = timezone.now()
    Drone.objects.filter(pk=drone_id).update(ws_connected=True, ws_connected_at=now, last_seen_at=now)
    return now


def drone_ws_disconnected(*, drone_id: int, connected_at: datetime | None) -> None:
    """The agent's WebSocket closed; a newer connection of the same drone keeps the flag up."""
    drones = Drone.objects.filter(pk=drone_id)
    if connected_at is not None:
        drones = drones.filter(ws_connected_at__lte=connected_at)
    drones.update(ws_connected=False)


def drones_websocket_silent_mark() -> list[int]:
    """Drones believed connected that miss SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS pongs in a row are not.

    `ws_connected` is set by the consumer on connect and cleared on close; an
    ASGI worker that is killed never runs the close, and the flag would stay
    up while nothing carries messages — the ladder would keep sending restarts
    over a WebSocket that is gone instead of using SSH. Unanswered pings are
    the evidence: the health sweep clears the flag, and a pong (or the next
    connect) sets it again. Returns the drones' ids.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE drones_drone SET ws_connected = false WHERE ws_connected AND missed_pongs >= %s "
                       "RETURNING id", [settings.SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS])
        drone_ids = sorted(row[0] for row in cursor.fetchall())
    if drone_ids:
        logger.warning("WebSocket marked down for %d drone(s) that stopped answering pings: %s", len(drone_ids),
                       drone_ids[:20])
    return drone_ids


def drone_ping_send(*, drone: Drone) -> str:
    """Push a `ping` to the drone over its WebSocket and record when; returns the ping id.

    The send time goes to Redis under the ping id, so whichever ASGI worker
    receives the pong can compute the latency and hand it back.
    """
    now = timezone.now()
    ((_, ping_id),) = _pings_send([drone.pk])
    Drone.objects.filter(pk=drone.pk).update(last_ping_at=now)
    return ping_id


# The drones whose ping is due (paused drones are not pinged: the health
# check leaves them alone).
PINGS_DUE_SQL = """
SELECT id FROM drones_drone
WHERE status <> 'paused' AND (last_ping_at IS NULL OR last_ping_at <= %(due_before)s)
ORDER BY id
"""

# Record pings that went out: count the previous ping as missed when no pong
# came back, and stamp the new one. The due condition is checked again, so a
# second sweep running at the same time records nothing twice.
PINGS_SENT_SQL = """
UPDATE drones_drone SET
    missed_pongs = missed_pongs + CASE
        WHEN last_ping_at IS NOT NULL AND (last_pong_at IS NULL OR last_pong_at < last_ping_at) THEN 1 ELSE 0 END,
    last_ping_at = %(now)s
WHERE id = ANY(%(ids)s) AND (last_ping_at IS NULL OR last_ping_at <= %(due_before)s)
RETURNING id
"""

#: Ping records written to Redis per pipeline.
PING_RECORDS_PER_PIPELINE = 1000


def drones_ping_due(*, now: datetime | None = None) -> list[int]:
    """Ping every drone whose ping is due, in bulk (the health check's first step); returns their ids.

    The pings go out first (`_pings_send`: ping records in Redis pipelines,
    then one batch of sends that reaches only drones with an agent
    connected), and only pings that went out are recorded, in one statement
    (PINGS_SENT_SQL). When Redis is down nothing is recorded, so an outage
    never counts as pongs missed by the whole fleet.
    """
    now = now or timezone.now()
    due_before = now - timedelta(seconds=settings.SWARM_DRONE_PING_INTERVAL)
    with connection.cursor() as cursor:
        cursor.execute(PINGS_DUE_SQL, {"due_before": due_before})
        due = [row[0] for row in cursor.fetchall()]
    if not due:
        return []
    _pings_send(due)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(PINGS_SENT_SQL, {"now": now, "ids": due, "due_before": due_before})
        return sorted(row[0] for row in cursor.fetchall())


def _pings_send(drone_ids: list[int]) -> list[tuple[int, str]]:
    """Store the ping records the pong handler reads (Redis pipelines), then push the pings; raises on failure.

    Returns (drone id, ping id) pairs. The one path for every ping: the
    sweep's, `POST /ping/all` and a single drone's.
    """
    sent_at = time.time()
    pings = [(drone_id, uuid.uuid4().hex) for drone_id in drone_ids]
    client = redis_client()
    for start in range(0, len(pings), PING_RECORDS_PER_PIPELINE):
        with client.pipeline(transaction=False) as pipeline:
            for drone_id, ping_id in pings[start:start + PING_RECORDS_PER_PIPELINE]:
                pipeline.set(key("ping", ping_id), json.dumps({"drone_id": drone_id, "sent_at": sent_at}),
                             ex=PING_RECORD_TTL)
            pipeline.execute()
    drones_send([(drone_id, {"type": "ping", "id": ping_id, "sent_at": sent_at}) for drone_id, ping_id in pings])
    return pings


#: How long the last health sweep's figures are kept (a stopped beat shows as a growing age until then).
HEALTH_SWEEP_RECORD_TTL = 86400


def health_sweep_record(*, seconds: float, pinged: int, evaluated: int, acted: int) -> None:
    """Keep what the last health sweep did (Redis), for /metrics and the admin; best effort."""
    record = {"at": time.time(), "seconds": round(seconds, 4), "pinged": pinged, "evaluated": evaluated,
              "acted": acted}
    try:
        redis_client().set(key("health-sweep"), json.dumps(record), ex=HEALTH_SWEEP_RECORD_TTL)
    except Exception:  # noqa: BLE001 - the sweep itself has been done
        logger.warning("could not record the health sweep", exc_info=True)


def drone_pong_record(*, drone_id: int, ping_id: str) -> float | None:
    """Record a pong: latency from the ping's send time; wakes any waiter. None if the ping is unknown."""
    client = redis_client()
    raw = client.getdel(key("ping", ping_id)) if ping_id else None
    if raw is None:
        return None
    record = json.loads(raw)
    if int(record["drone_id"]) != int(drone_id):
        return None  # a drone cannot answer another drone's ping
    latency_ms = round((time.time() - float(record["sent_at"])) * 1000.0, 3)
    now = timezone.now()
    Drone.objects.filter(pk=drone_id).update(last_pong_at=now, last_seen_at=now, ping_latency_ms=latency_ms,
                                             missed_pongs=0, ws_connected=True)
    result_key = key("pong", ping_id)
    client.rpush(result_key, json.dumps({"latency_ms": latency_ms}))
    client.expire(result_key, 60)
    return latency_ms


def drone_ping(*, drone: Drone, timeout: float | None = None) -> dict:
    """Ping a drone and wait for its pong (from any ASGI worker) up to `timeout` seconds.

    Returns `{name, ok, latency_ms, ws_connected, detail}`; a missing pong is
    `ok: false`, not an error (the drone's health is the answer).
    """
    timeout = settings.SWARM_DRONE_PONG_TIMEOUT if timeout is None else timeout
    drone.refresh_from_db(fields=["ws_connected"])
    ping_id = drone_ping_send(drone=drone)
    answer = redis_client().blpop([key("pong", ping_id)], timeout=max(1, int(round(timeout))))
    if answer is None:
        return {"name": drone.name, "ok": False, "latency_ms": None, "ws_connected": drone.ws_connected,
                "detail": f"no pong within {timeout:g} s"}
    latency = json.loads(answer[1])["latency_ms"]
    return {"name": drone.name, "ok": True, "latency_ms": latency, "ws_connected": True, "detail": "pong"}


def drone_ping_all() -> list[str]:
    """Push a ping to every drone that is not paused, in bulk (answers arrive asynchronously); returns their names.

    As in the health sweep, the pings go out before they are recorded.
    """
    drones = list(Drone.objects.exclude(status=DroneStatus.PAUSED).order_by("name").values_list("pk", "name"))
    if drones:
        now = timezone.now()
        _pings_send([drone_id for drone_id, _ in drones])
        Drone.objects.filter(pk__in=[drone_id for drone_id, _ in drones]).update(last_ping_at=now)
    return [name for _, name in drones]


# --- Operator holds --------------------------------------------------------------


def _set_status(*, drone: Drone, status: str, actor) -> Drone:
    drone.status = status
    drone.save(update_fields=["status"])
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
        EscalationEvent.objects.create(drone=locked, level=EscalationLevel.HEALTHY, action="reset",
                                       result=EscalationResult.RESET,
                                       detail=f"reset by {actor} from L{previous}")
        audit_record(actor=actor, action="drone.reset_escalation", obj=locked, detail={"from_level": previous})
    return locked


def cooldown_seconds(*, level: int, attempts: int) -> float:
    """The wait after the `attempts`-th action at `level`: base × 2^(attempts-1), capped."""
    base = float(settings.SWARM_ESCALATION_COOLDOWNS.get(level, 30.0))
    return min(base * (2 ** max(0, attempts - 1)), float(settings.SWARM_ESCALATION_COOLDOWN_CAP))


def heartbeat_overdue_after() -> timedelta:
    """How long without a heartbeat makes a drone stale."""
    return timedelta(seconds=settings.SWARM_DRONE_HEARTBEAT_INTERVAL * settings.SWARM_DRONE_STALE_AFTER_MISSED)
