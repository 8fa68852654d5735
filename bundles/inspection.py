"""Bundle inspection off the request's critical path: a bounded pool and a per-tenant limit.

The inspector (`swarm_agent.bundle_safety.BundleInspector`) is linear and
mostly inside zlib, which releases the GIL; it still costs CPU, so it runs
on a pool of `SWARM_BUNDLE_INSPECT_WORKERS` threads per server process. Each
upload has at most one chunk in flight on the pool: the request thread
receives (and hashes and stores) the next chunk while a worker inspects the
previous one, and waits only when it gets a chunk ahead — which is the
back-pressure that keeps memory flat when the pool is busy.

A tenant may have `SWARM_BUNDLE_INSPECTIONS_PER_TENANT` uploads in flight at
once, counted across every replica in Redis (a sorted set of leases, so a
crashed process frees its slots when they expire); one more is answered 429
`too_many_inspections` before its body is read.
"""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import redis
from django.conf import settings
from swarm_agent.bundle_safety import BundleInspector, BundleLimits, BundleRejected, BundleSummary

from swarm.core.errors import ApiError

#: A slot's lease; refreshed while the upload is still arriving, so only a crashed process lets one expire.
SLOT_LEASE_SECONDS = 120
SLOT_REFRESH_SECONDS = 15

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_redis: redis.Redis | None = None


def inspection_pool() -> ThreadPoolExecutor:
    """The process's bounded pool of inspector threads (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, settings.SWARM_BUNDLE_INSPECT_WORKERS),
                                       thread_name_prefix="bundle-inspect")
        return _pool


class PooledInspector:
    """A `BundleInspector` whose work runs on the inspection pool, one chunk in flight at a time."""

    def __init__(self, limits: BundleLimits):
        self._inspector = BundleInspector(limits)
        self._in_flight: Future | None = None

    def _settle(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # re-raises the chunk's BundleRejected

    def feed(self, chunk: bytes) -> None:
        """Queue `chunk` for inspection; raises `BundleRejected` as soon as an earlier chunk broke a rule."""
        self._settle()
        self._in_flight = inspection_pool().submit(self._inspector.feed, chunk)

    def finish(self) -> BundleSummary:
        """Wait for the last chunk; the summary, or `BundleRejected`."""
        try:
            self._settle()
        except BundleRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in the inspector is still a refusal, not a 500
            raise BundleRejected("not_a_tar_gz", f"could not read the bundle: {exc}") from exc
        return self._inspector.finish()

    def abandon(self) -> None:
        """Stop inspecting: the chunk in flight ends at its next step and nothing more is queued."""
        self._inspector.abandon()
        self._in_flight = None


def _redis_client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.REDIS_URL)
    return _redis


class InspectionSlot:
    """One upload's place in its tenant's limit; `release()` when the request ends."""

    def __init__(self, key: str, token: str):
        self.key = key
        self.token = token
        self._refreshed = time.monotonic()

    def keep_alive(self) -> None:
        """Extend the lease while the upload is still arriving (cheap: at most every SLOT_REFRESH_SECONDS)."""
        if time.monotonic() - self._refreshed < SLOT_REFRESH_SECONDS:
            return
        self._refreshed = time.monotonic()
        _redis_client().zadd(self.key, {self.token: time.time() + SLOT_LEASE_SECONDS}, xx=True)
        _redis_client().expire(self.key, SLOT_LEASE_SECONDS)

    def release(self) -> None:
        """Give the slot back."""
        _redis_client().zrem(self.key, self.token)


def inspection_holder(*, principal, tenant_slug: str | None) -> str:
    """Whose limit an upload counts against: the token's tenant, else the named tenant, else the token."""
    if principal.tenant_id is not None:
        return f"tenant:{principal.tenant_id}"
    if tenant_slug:
        from tenancy.models import Tenant

        tenant_id = Tenant.objects.filter(slug=tenant_slug).values_list("pk", flat=True).first()
        if tenant_id is not None:
            return f"tenant:{tenant_id}"
    return f"principal:{principal.token_id or principal.user_id or principal.label}"


def inspection_slot_acquire(*, holder: str) -> InspectionSlot:
    """Take one of `holder`'s inspection slots, or raise a 429 naming the limit.

    Two uploads racing for the last slot may both be refused (each sees the
    other's lease); neither is ever let past the limit.
    """
    limit = settings.SWARM_BUNDLE_INSPECTIONS_PER_TENANT
    slot = InspectionSlot(f"swarm:bundle-inspections:{holder}", uuid.uuid4().hex)
    now = time.time()
    pipeline = _redis_client().pipeline()
    pipeline.zremrangebyscore(slot.key, "-inf", now)
    pipeline.zadd(slot.key, {slot.token: now + SLOT_LEASE_SECONDS})
    pipeline.zcard(slot.key)
    pipeline.expire(slot.key, SLOT_LEASE_SECONDS)
    in_flight = pipeline.execute()[2]
    if in_flight > limit:
        slot.release()
        raise ApiError(
            f"This tenant already has {limit} bundle uploads being inspected, the most "
            f"SWARM_BUNDLE_INSPECTIONS_PER_TENANT allows; retry when one has finished.",
            code="too_many_inspections", status_code=429, headers={"Retry-After": "2"},
        )
    return slot
