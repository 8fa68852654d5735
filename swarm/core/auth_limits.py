"""Brute force refused: failed token authentications are counted per client address and per token prefix.

Counters live in the shared cache (Redis), so every replica sees the same
numbers; nothing is kept in process memory. Windows are fixed
(`SWARM_AUTH_FAILURE_WINDOW` seconds, numbered from the epoch), so a
counter needs no TTL read: the retry time is the end of the current window.

Only *failed* authentications count. Once a counter reaches its limit, every
request from that address (or with a token of that prefix) is refused with a
429 before any token is looked up — a correct guess inside a blocked window
is refused too, or the limit would still be an oracle — until the window
ends. The crossing is written to the audit log once per window.
"""
from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from swarm.core.errors import ApiError
from swarm.core.models import ApiToken
from swarm.core.tokens import split_prefix

logger = logging.getLogger(__name__)

#: Cache key namespace of the counters (the cache's own KEY_PREFIX comes in front).
COUNTER_NAMESPACE = "auth-failures"


class AuthenticationRateLimited(ApiError):
    """429: too many failed authentications from one address or for one token prefix."""

    status_code = 429
    code = "too_many_failed_authentications"


def client_address(request) -> str:
    """The caller's address as the ASGI server saw it.

    Behind a reverse proxy run uvicorn with `--proxy-headers --forwarded-allow-ips <proxy>`, which puts
    the forwarded client address here; a client-supplied X-Forwarded-For is never read directly (it
    would let an attacker pick a fresh address per guess).
    """
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _limits(address: str, prefix: str | None) -> list[tuple[str, str, int, str]]:
    """(cache key, what is counted, limit, setting name) for each counter this request touches."""
    window = int(time.time() // settings.SWARM_AUTH_FAILURE_WINDOW)
    limits = [(f"{COUNTER_NAMESPACE}:address:{address}:{window}", f"address {address}",
               settings.SWARM_AUTH_FAILURES_PER_ADDRESS, "SWARM_AUTH_FAILURES_PER_ADDRESS")]
    if prefix:
        limits.append((f"{COUNTER_NAMESPACE}:prefix:{prefix}:{window}", f"token prefix {prefix}",
                       settings.SWARM_AUTH_FAILURES_PER_TOKEN_PREFIX, "SWARM_AUTH_FAILURES_PER_TOKEN_PREFIX"))
    return limits


def _retry_after() -> int:
    """Whole seconds until the current window ends (at least 1)."""
    window = settings.SWARM_AUTH_FAILURE_WINDOW
    return max(1, math.ceil(window - time.time() % window))


def refuse_if_rate_limited(*, address: str, prefix: str | None) -> None:
    """Raise a 429 when the address or the prefix used up its failures for this window."""
    limits = _limits(address, prefix)
    try:
        counts = cache.get_many([key for key, *_ in limits])
    except RedisError:
        # The limit protects against guessing; authentication itself is in PostgreSQL and goes on.
        logger.warning("auth failure counters unreadable (cache down); not rate-limiting", exc_info=True)
        return
    for key, counted, limit, setting in limits:
        if int(counts.get(key) or 0) >= limit:
            retry_after = _retry_after()
            raise AuthenticationRateLimited(
                f"Too many failed authentications for {counted}: {limit} in "
                f"{settings.SWARM_AUTH_FAILURE_WINDOW} s (limit {setting}). "
                f"Retry after {retry_after} s with a valid token.",
                headers={"Retry-After": str(retry_after)},
            )


def record_failure(*, address: str, prefix: str | None) -> None:
    """Count one failed authentication; audit the failure that reaches a limit."""
    window = settings.SWARM_AUTH_FAILURE_WINDOW
    for key, counted, limit, setting in _limits(address, prefix):
        try:
            cache.add(key, 0, timeout=2 * window)
            count = cache.incr(key)
        except (RedisError, ValueError):  # ValueError: the key expired between add and incr
            logger.warning("could not count a failed authentication for %s", counted, exc_info=True)
            continue
        if count == limit:
            _audit_limit_reached(counted=counted, limit=limit, setting=setting, address=address, prefix=prefix)


def _audit_limit_reached(*, counted: str, limit: int, setting: str, address: str, prefix: str | None) -> None:
    from swarm.core.services import audit_record

    logger.warning("failed authentications for %s reached %s (%s); refusing for the rest of the window",
                   counted, limit, setting)
    token = ApiToken.objects.filter(prefix=prefix).only("pk", "tenant_id").first() if prefix else None
    audit_record(actor=f"address:{address}", action="auth.rate_limited",
                 obj=token, object_type="core.apitoken" if token else "auth.client",
                 object_id=str(token.pk) if token else (prefix or address),
                 tenant_id=token.tenant_id if token else None,
                 detail={"limit": limit, "setting": setting, "counted": counted, "address": address,
                         "token_prefix": prefix or "", "window_seconds": settings.SWARM_AUTH_FAILURE_WINDOW})


def authenticate_token_limited(*, request, plaintext: str, accept=None) -> ApiToken | None:
    """`authenticate_token` behind the failure limits: a 429 when over a limit, a counted failure when None.

    `accept(token)` narrows what counts as a success (an execution token on the metadata endpoint);
    a token it refuses counts as a failure like an unknown one.
    """
    from swarm.core.authentication import authenticate_token

    address = client_address(request)
    prefix = split_prefix(plaintext)
    refuse_if_rate_limited(address=address, prefix=prefix)
    token = authenticate_token(plaintext)
    if token is not None and accept is not None and not accept(token):
        token = None
    if token is None:
        record_failure(address=address, prefix=prefix)
    return token


def reset_failure_counters() -> None:
    """Forget every counter (tests; an operator after a false alarm: `manage.py shell`)."""
    # Django's RedisCache has no delete-by-pattern; its redis-py client does the SCAN.
    client = cache._cache.get_client(write=True)
    pattern = cache.make_key(f"{COUNTER_NAMESPACE}:*")
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
