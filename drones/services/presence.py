"""Presence: the agent's WebSocket coming and going, pings out and pongs back, the health sweep's record.

Ping send times live in Redis under the ping id, so whichever ASGI worker
receives the pong can work out the latency; every ping goes out through
`_pings_send` (a single drone's, `POST /ping/all` and the health sweep's).
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from drones.choices import DroneStatus
from drones.events import drone_changed, drones_changed, drones_send
from drones.topology import topology_pong
from drones.models import Drone
from drones.redis_client import key, redis_client

logger = logging.getLogger(__name__)

PING_RECORD_TTL = 300


def drone_ws_connected(*, drone_id: int) -> datetime:
    """The agent's WebSocket is up (called by the consumer); returns the connection time."""
    now = timezone.now()
    Drone.objects.filter(pk=drone_id).update(ws_connected=True, ws_connected_at=now, last_seen_at=now)
    drone_changed(drone_id, ws=True)
    return now


def drone_ws_disconnected(*, drone_id: int, connected_at: datetime | None) -> None:
    """The agent's WebSocket closed; a newer connection of the same drone keeps the flag up."""
    drones = Drone.objects.filter(pk=drone_id)
    if connected_at is not None:
        drones = drones.filter(ws_connected_at__lte=connected_at)
    if drones.update(ws_connected=False):
        drone_changed(drone_id, ws=False)


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
    drones_changed(drone_ids, ws=False)
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
    topology_pong(drone_id, latency_ms)
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
