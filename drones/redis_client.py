"""A shared Redis connection for cross-process hand-offs (ping results)."""
import functools

import redis
from django.conf import settings


@functools.cache
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=None, health_check_interval=30)


def redis_client() -> redis.Redis:
    """The Redis client for REDIS_URL (a thread-safe connection pool)."""
    return _client_for(settings.REDIS_URL)


def key(*parts) -> str:
    """A namespaced key, shared by every control-plane process using this Redis."""
    prefix = settings.CACHES["default"].get("KEY_PREFIX") or "swarm"
    return ":".join([prefix, "drones", *map(str, parts)])
