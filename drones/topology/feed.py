"""The topology feed: what the fleet does, batched into compact frames for whoever watches the topology page.

Domain code reports through these calls, from any thread (event loop, HTTP
thread, Celery):

    topology_heartbeat(drone_id)                         # the heartbeat hook, every heartbeat
    topology_changed(drone_id, status=…, level=…, latency_ms=…, ws=…)   # a drone's state changed
    topology_event(drone_id, level=…, action=…, result=…, at=…)         # a step of the ladder
    topology_activity("build_start" | "build_finish")    # counted for the waveform only

On a server, the calls of one process accumulate in one batch per event loop
and a task flushes it every FLUSH_SECONDS: the counts go to per-second Redis
counters (the waveform's history, kept WAVEFORM_SECONDS), and one frame goes
to the `topology` group — only when someone is in it
(swarm.core.group_notices.deliver), so a fleet nobody watches costs a
membership lookup per flush and nothing per heartbeat. Off a server (Celery,
management commands, tests) each call is flushed at once.

A frame is a compact diff:

    {"type": "frame", "t": <server time>, "hb": [drone ids that heartbeated], "h0": <oldest of those heartbeats>,
     "po": [ids that answered a ping], "ch": [{"i": id, "s": status, "l": level, "p": latency, "w": ws}, …],
     "ev": [{"i": id, "l": level, "a": action, "r": result, "t": at}, …], "act": {"hb": 12, …}}
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync

from swarm.core import event_loop, group_notices

logger = logging.getLogger(__name__)

TOPOLOGY_GROUP = "topology"
FRAME_EVENT = "topology.frame"
#: Seconds between two frames of one process (a few frames a second at most).
FLUSH_SECONDS = 0.2
#: Seconds of per-second activity kept in Redis for the waveform.
WAVEFORM_SECONDS = 15 * 60
#: Heartbeat ids carried by one frame; more are only counted.
MAX_IDS_PER_FRAME = 5000
#: Activity kinds and their short names in frames and counters.
KINDS = {"heartbeat": "hb", "pong": "po", "escalation": "esc", "build_start": "bs", "build_finish": "bf"}


@dataclass
class TopologyBatch:
    """What happened on one event loop since its last frame."""

    heartbeats: list[int] = field(default_factory=list)
    oldest_heartbeat: float | None = None
    pongs: list[int] = field(default_factory=list)
    changes: dict[int, dict] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    activity: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)  # (second, short kind) -> count, for the Redis counters

    def count(self, kind: str, at: float, amount: int = 1) -> None:
        short = KINDS[kind]
        self.activity[short] += amount
        self.seconds[(int(at), short)] += amount

    def heartbeat(self, drone_id: int, at: float) -> None:
        if len(self.heartbeats) < MAX_IDS_PER_FRAME:
            self.heartbeats.append(int(drone_id))
        if self.oldest_heartbeat is None:
            self.oldest_heartbeat = at
        self.count("heartbeat", at)

    def pong(self, drone_id: int, latency_ms: float | None, at: float) -> None:
        self.pongs.append(int(drone_id))
        self.change(drone_id, {"p": latency_ms, "w": True})
        self.count("pong", at)

    def change(self, drone_id: int, fields: dict) -> None:
        self.changes.setdefault(int(drone_id), {"i": int(drone_id)}).update(fields)

    def event(self, drone_id: int, fields: dict, at: float) -> None:
        self.events.append({"i": int(drone_id), **fields})
        self.count("escalation", at)

    def frame(self) -> dict:
        frame = {"type": "frame", "t": round(time.time(), 3), "act": dict(self.activity)}
        if self.heartbeats:
            frame["hb"] = self.heartbeats
            frame["h0"] = round(self.oldest_heartbeat, 3)
        if self.pongs:
            frame["po"] = self.pongs
        if self.changes:
            frame["ch"] = list(self.changes.values())
        if self.events:
            frame["ev"] = self.events
        return frame


def activity_key(minute: int) -> str:
    """The Redis hash holding one minute's per-second counts (fields `<second>:<kind>`)."""
    from drones.redis_client import key

    return key("topology", "activity", minute)


def _counter_commands(seconds: Counter) -> list[tuple]:
    commands, minutes = [], set()
    for (second, short), amount in seconds.items():
        minute = second - second % 60
        minutes.add(minute)
        commands.append(("hincrby", activity_key(minute), f"{second}:{short}", amount))
    commands += [("expire", activity_key(minute), WAVEFORM_SECONDS + 120) for minute in minutes]
    return commands


async def _send(batch: TopologyBatch) -> None:
    """Send one batch: the frame to whoever watches, then the counters (never raises)."""
    await group_notices.deliver([(TOPOLOGY_GROUP, {"type": FRAME_EVENT, "frame": batch.frame()})])
    if batch.seconds:
        try:
            client = _async_redis()
            async with client.pipeline(transaction=False) as pipeline:
                for name, *args in _counter_commands(batch.seconds):
                    getattr(pipeline, name)(*args)
                await pipeline.execute()
        except Exception:  # noqa: BLE001 - the waveform's history missing a second is no reason to fail
            logger.debug("could not count topology activity", exc_info=True)


_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _async_redis():
    """A redis.asyncio client for this event loop (clients belong to the loop they were made on)."""
    import redis.asyncio as redis_asyncio
    from django.conf import settings

    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis_asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    return client


class LoopFeed:
    """The batch of one event loop and the task that flushes it."""

    def __init__(self):
        self.batch = TopologyBatch()
        self._flusher: asyncio.Task | None = None

    def touched(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                batch, self.batch = self.batch, TopologyBatch()
                if not (batch.activity or batch.changes):
                    return  # an idle loop keeps no task
                await _send(batch)
        finally:
            self._flusher = None


_feeds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _loop_feed() -> LoopFeed:
    loop = asyncio.get_running_loop()
    feed = _feeds.get(loop)
    if feed is None:
        feed = _feeds[loop] = LoopFeed()
    return feed


def _record(apply) -> None:
    """Apply `apply(batch)` to this loop's batch, the server loop's (from its threads), or send it at once."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        feed = _loop_feed()
        apply(feed.batch)
        feed.touched()
        return
    loop = event_loop.server_loop_for_other_threads()
    if loop is not None:
        def on_loop():
            feed = _loop_feed()
            apply(feed.batch)
            feed.touched()

        loop.call_soon_threadsafe(on_loop)
        return
    batch = TopologyBatch()
    apply(batch)
    try:
        async_to_sync(_send_now)(batch)
    except Exception:  # noqa: BLE001 - e.g. called where no loop may be started
        logger.warning("could not send a topology frame", exc_info=True)


async def _send_now(batch: TopologyBatch) -> None:
    try:
        await _send(batch)
    finally:
        client = _async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def topology_heartbeat(drone_id: int) -> None:
    """A drone heartbeated (called for every heartbeat; cheap)."""
    at = time.time()
    _record(lambda batch: batch.heartbeat(drone_id, at))


def topology_pong(drone_id: int, latency_ms: float | None) -> None:
    """A drone answered a ping in `latency_ms`."""
    at = time.time()
    _record(lambda batch: batch.pong(drone_id, latency_ms, at))


def topology_changed(drone_id: int, *, status: str | None = None, level: int | None = None,
                     latency_ms: float | None = None, ws: bool | None = None) -> None:
    """A drone's state changed: only the fields given are sent."""
    fields = {short: value for short, value in (("s", status), ("l", level), ("p", latency_ms), ("w", ws))
              if value is not None}
    if fields:
        _record(lambda batch: batch.change(drone_id, fields))


def topology_changed_many(drone_ids, **fields) -> None:
    """`topology_changed` with the same fields for many drones (one batch)."""
    fields = {short: value for short, value in (("s", fields.get("status")), ("l", fields.get("level")),
                                                ("w", fields.get("ws"))) if value is not None}
    drone_ids = list(drone_ids)
    if fields and drone_ids:
        _record(lambda batch: [batch.change(drone_id, fields) for drone_id in drone_ids])


def topology_event(drone_id: int, *, level: int, action: str, result: str, at: float | None = None,
                   detail: str = "") -> None:
    """A step of the ladder (or a reset) on one drone; the drone's level changes with it."""
    at = at or time.time()
    fields = {"l": int(level), "a": action, "r": result, "t": round(at, 3), "d": detail[:200]}
    _record(lambda batch: (batch.event(drone_id, fields, at), batch.change(drone_id, {"l": int(level)})))


def topology_activity(kind: str, amount: int = 1) -> None:
    """Count something the waveform shows that no node shows (build starts and finishes)."""
    at = time.time()
    _record(lambda batch: batch.count(kind, at, amount))


async def drain() -> None:
    """Send this loop's pending frame now (tests)."""
    feed = _feeds.get(asyncio.get_running_loop())
    if feed is not None and (feed.batch.activity or feed.batch.changes):
        batch, feed.batch = feed.batch, TopologyBatch()
        await _send(batch)


def _on_heartbeat(drone_id: int, body: dict) -> None:
    topology_heartbeat(drone_id)


async def _on_heartbeat_async(async_connection, drone_id: int, body: dict) -> None:
    topology_heartbeat(drone_id)


def register_heartbeat_hook() -> None:
    """Every heartbeat becomes a packet on the topology (a hook with no fields sees every heartbeat)."""
    from drones.services.heartbeat import register_heartbeat_hook as register

    register(name="topology", hook=_on_heartbeat, fields=(), async_hook=_on_heartbeat_async)
