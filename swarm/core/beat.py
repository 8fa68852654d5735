"""Celery beat that sends only while it holds a Redis lease: one sending beat, any number standing by.

django-celery-beat's DatabaseScheduler keeps the schedule in PostgreSQL but
does nothing to stop two beat processes from both sending every due entry
(each keeps its own `last_run_at` in memory and writes it back later). A
second beat started by mistake — a unit enabled on two machines, a deploy
that starts the new one before stopping the old — would double every
periodic task. Instead of making every periodic task proof against a
duplicate, the scheduler itself takes a lease: `SET key NX PX` in Redis,
renewed on every tick by its holder. A beat without the lease sends
nothing and retries every third of the lease, so it takes over at most
`SWARM_BEAT_LEASE_SECONDS` after the sending one dies (a standby, not an
error). Tasks stay idempotent anyway (STYLE 4, 5): the lease prevents
double work, it does not make it harmful.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid

import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger("swarm.core.beat")

#: Renews the lease only when this beat still holds it (compare and extend, atomically).
RENEW_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
#: Deletes the lease only when this beat holds it.
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def beat_lease_key() -> str:
    """The Redis key of the sending beat's lease (per installation: the cache prefix)."""
    return f"{settings.CACHES['default'].get('KEY_PREFIX', 'swarm')}:beat-leader"


class SingleLeaderDatabaseScheduler(DatabaseScheduler):
    """DatabaseScheduler that ticks only while it holds the beat lease in Redis."""

    def __init__(self, *args, **kwargs):
        self._lease_holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease_redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
        self._leading: bool | None = None  # unknown until the first tick: either way is logged
        super().__init__(*args, **kwargs)

    @property
    def lease_milliseconds(self) -> int:
        return int(settings.SWARM_BEAT_LEASE_SECONDS * 1000)

    def _hold_lease(self) -> bool:
        """Take or renew the lease; False when another beat holds it (or Redis cannot say)."""
        key = beat_lease_key()
        try:
            held = bool(self._lease_redis.set(key, self._lease_holder, nx=True, px=self.lease_milliseconds)) or \
                bool(self._lease_redis.eval(RENEW_SCRIPT, 1, key, self._lease_holder, self.lease_milliseconds))
        except redis.RedisError as error:
            # Without Redis the broker is down too: sending would fail anyway, and standing by is safe.
            logger.warning("beat lease unavailable (%s): not sending", error)
            held = False
        if held != self._leading:
            if held:
                logger.info("beat lease taken (%s): this beat sends the schedule", self._lease_holder)
            else:
                logger.warning("beat lease held by %s: this beat stands by",
                               self._safe_get(key) or "another beat")
            self._leading = held
        return held

    def _safe_get(self, key: str) -> str | None:
        try:
            value = self._lease_redis.get(key)
        except redis.RedisError:
            return None
        return value.decode() if value else None

    def tick(self, *args, **kwargs):
        standby = max(0.5, settings.SWARM_BEAT_LEASE_SECONDS / 3)
        if not self._hold_lease():
            return standby
        # Renew well before the lease runs out, however long the next due entry is away.
        return min(super().tick(*args, **kwargs), standby)

    def close(self):
        super().close()
        try:
            self._lease_redis.eval(RELEASE_SCRIPT, 1, beat_lease_key(), self._lease_holder)
        except redis.RedisError:
            pass  # the lease runs out by itself
