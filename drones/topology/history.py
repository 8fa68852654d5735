"""What the topology page reads: the fleet now, the fleet as it was, the waveform's history, one drone's details.

* `topology_snapshot()` — every drone with what the page draws, recent ladder
  steps, the last WAVEFORM_SECONDS of per-second activity and the last hour
  of per-minute activity (for the scrubber's track);
* `fleet_state_at(at)` — the fleet at a past moment: escalation levels
  replayed from the escalation events (every step and every reset is one, so
  they are exact), status, latency, WebSocket and running builds from the
  last per-minute `FleetSample` before that moment;
* `fleet_sample_take()` — the beat task that writes those samples and drops
  the ones older than SWARM_TOPOLOGY_SAMPLE_RETENTION.

Running builds belong to the builds app, which this app must not import: it
registers a source (`register_running_builds_source`) from its AppConfig.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from drones.models import Drone, EscalationEvent, FleetSample
from drones.topology.feed import KINDS, WAVEFORM_SECONDS, activity_key

#: How far back the scrubber goes.
HISTORY_SECONDS = 3600
#: A sample older than this before the moment asked for says nothing about it.
SAMPLE_VALID_SECONDS = 180
RECENT_EVENTS = 30

RunningBuildsSource = Callable[[datetime | None], dict[int, int]]
_running_builds_sources: list[RunningBuildsSource] = []


def register_running_builds_source(source: RunningBuildsSource) -> None:
    """`source(at)` → {drone id: builds running at `at` (None: now)}; the builds app registers one."""
    if source not in _running_builds_sources:
        _running_builds_sources.append(source)


def running_builds(at: datetime | None = None) -> dict[int, int]:
    counts: dict[int, int] = {}
    for source in _running_builds_sources:
        for drone_id, count in source(at).items():
            counts[drone_id] = counts.get(drone_id, 0) + count
    return counts


def group_label(drone_type: str, labels) -> str:
    """The group a drone is drawn in: its type and first label."""
    first = next((str(label) for label in labels or [] if label), "")
    return f"{drone_type} · {first}" if first else drone_type


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else round(moment.timestamp(), 3)


def event_row(event: EscalationEvent, drone_name: str | None = None) -> dict:
    return {"i": event.drone_id, "n": drone_name or event.drone.name, "l": event.level, "a": event.action,
            "r": event.result, "t": _epoch(event.at), "d": event.detail[:200]}


def recent_events(*, before: datetime | None = None, limit: int = RECENT_EVENTS) -> list[dict]:
    events = EscalationEvent.objects.select_related("drone").order_by("-at", "-id")
    if before is not None:
        events = events.filter(at__lte=before, at__gte=before - timedelta(seconds=WAVEFORM_SECONDS))
    return [event_row(event) for event in events[:limit]]


def activity_recent(*, seconds: int = WAVEFORM_SECONDS, now: float | None = None) -> list[list]:
    """[[second, kind, count], …] of the last `seconds` (the waveform's history; empty when Redis is away)."""
    from drones.redis_client import redis_client

    now = int(now or time.time())
    first = now - seconds
    minutes = range(first - first % 60, now + 1, 60)
    try:
        with redis_client().pipeline(transaction=False) as pipeline:
            for minute in minutes:
                pipeline.hgetall(activity_key(minute))
            answers = pipeline.execute()
    except Exception:  # noqa: BLE001 - the page then starts with an empty waveform
        return []
    rows = []
    for answer in answers:
        for field, count in answer.items():
            second, _, kind = field.decode().partition(":")
            if int(second) >= first:
                rows.append([int(second), kind, int(count)])
    return sorted(rows)


def activity_last_hour() -> list[list]:
    """[[minute, {kind: count}], …] of the last hour, from the samples and the escalation events."""
    since = timezone.now() - timedelta(seconds=HISTORY_SECONDS)
    minutes: dict[int, dict] = {}
    for at, activity in FleetSample.objects.filter(at__gte=since).values_list("at", "activity"):
        minute = int(at.timestamp()) // 60 * 60 - 60  # a sample counts the minute before it
        minutes[minute] = {kind: count for kind, count in (activity or {}).items() if kind != "esc"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT floor(extract(epoch FROM at) / 60) * 60, count(*) FROM drones_escalationevent "
                       "WHERE at >= %s GROUP BY 1", [since])
        for minute, count in cursor.fetchall():
            minutes.setdefault(int(minute), {})["esc"] = int(count)
    return sorted([minute, counts] for minute, counts in minutes.items())


def topology_snapshot() -> dict:
    """Everything the topology page starts from (and re-reads when a frame names a drone it does not know)."""
    now = timezone.now()
    builds = running_builds()
    drones = []
    for (pk, name, drone_type, labels, status, level, latency, ws, last_heartbeat, capacity) in (
            Drone.objects.order_by("drone_type", "name").values_list(
                "pk", "name", "drone_type", "labels", "status", "escalation_level", "ping_latency_ms",
                "ws_connected", "last_heartbeat_at", "capacity")):
        drones.append({"i": pk, "n": name, "k": drone_type, "g": group_label(drone_type, labels), "s": status,
                       "l": level, "p": latency, "w": ws, "c": capacity, "b": builds.get(pk, 0),
                       "hb": None if last_heartbeat is None else round((now - last_heartbeat).total_seconds(), 1)})
    return {"type": "snapshot", "t": _epoch(now), "drones": drones, "events": recent_events(),
            "wave": activity_recent(), "hour": activity_last_hour(),
            "window": HISTORY_SECONDS, "wave_seconds": WAVEFORM_SECONDS,
            "heartbeat_interval": settings.SWARM_DRONE_HEARTBEAT_INTERVAL}


LEVELS_AT_SQL = """
SELECT DISTINCT ON (drone_id) drone_id, level FROM drones_escalationevent
WHERE at <= %s ORDER BY drone_id, at DESC, id DESC
"""


def fleet_state_at(at: datetime) -> dict:
    """The fleet at `at` (within the last hour): see the module docstring for where each field comes from."""
    with connection.cursor() as cursor:
        cursor.execute(LEVELS_AT_SQL, [at])
        levels = dict(cursor.fetchall())
    sample = (FleetSample.objects.filter(at__lte=at + timedelta(seconds=30),
                                         at__gte=at - timedelta(seconds=SAMPLE_VALID_SECONDS))
              .order_by("-at").first())
    sampled: dict[int, tuple] = {}
    if sample is not None:
        columns = sample.drones
        for index, drone_id in enumerate(columns.get("i", [])):
            sampled[drone_id] = tuple(columns[name][index] if index < len(columns.get(name, [])) else None
                                      for name in ("s", "p", "w", "b"))
    drones = []
    for pk in Drone.objects.filter(registered_at__lte=at).order_by("pk").values_list("pk", flat=True):
        status, latency, ws, builds = sampled.get(pk, (None, None, None, None))
        drones.append([pk, status, levels.get(pk, 0), latency, ws, builds])
    return {"type": "state_at", "at": _epoch(at), "sample_at": _epoch(sample.at) if sample else None,
            "drones": drones, "events": recent_events(before=at)}


def fleet_sample_take(*, now: datetime | None = None) -> FleetSample:
    """Write this minute's sample of the whole fleet, and drop samples past their retention."""
    now = now or timezone.now()
    columns: dict[str, list] = {"i": [], "s": [], "p": [], "w": [], "hb": [], "b": []}
    builds = running_builds()
    for pk, status, latency, ws, last_heartbeat in Drone.objects.order_by("pk").values_list(
            "pk", "status", "ping_latency_ms", "ws_connected", "last_heartbeat_at"):
        columns["i"].append(pk)
        columns["s"].append(status)
        columns["p"].append(latency)
        columns["w"].append(ws)
        columns["hb"].append(None if last_heartbeat is None else round((now - last_heartbeat).total_seconds()))
        columns["b"].append(builds.get(pk, 0))
    activity: dict[str, int] = {}
    for _, kind, count in activity_recent(seconds=60, now=now.timestamp()):
        activity[kind] = activity.get(kind, 0) + count
    sample = FleetSample.objects.create(at=now, drones=columns, activity=activity)
    FleetSample.objects.filter(at__lt=now - timedelta(seconds=settings.SWARM_TOPOLOGY_SAMPLE_RETENTION)).delete()
    return sample


def drone_detail(drone_id: int) -> dict | None:
    """What the page shows on hover: the drone's state, its running builds, its last ladder steps."""
    drone = Drone.objects.filter(pk=drone_id).first()
    if drone is None:
        return None
    now = timezone.now()
    events = [event_row(event, drone.name) for event in drone.escalation_events.order_by("-at", "-id")[:5]]
    return {"type": "detail", "i": drone.pk, "n": drone.name, "k": drone.drone_type, "labels": drone.labels,
            "s": drone.status, "l": drone.escalation_level, "p": drone.ping_latency_ms, "w": drone.ws_connected,
            "c": drone.capacity, "b": running_builds().get(drone.pk, 0), "v": drone.agent_version,
            "hb": None if drone.last_heartbeat_at is None else round((now - drone.last_heartbeat_at).total_seconds(), 1),
            "events": events, "deploy": None}


__all__ = ["KINDS", "activity_last_hour", "activity_recent", "drone_detail", "fleet_sample_take", "fleet_state_at",
           "register_running_builds_source", "running_builds", "topology_snapshot"]
