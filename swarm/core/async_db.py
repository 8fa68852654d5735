"""An asyncio psycopg connection pool on Django's database settings, for the event-loop fast paths.

The fast paths (swarm/core/fast_routes.py) answer a few hot agent requests on
the server's event loop without a thread; their statements go through this
pool, one per server process, opened on first use. Connections are in
autocommit mode: every fast-path statement is a transaction of its own.
"""
from __future__ import annotations

import asyncio

from django.conf import settings
from django.db import connections
from psycopg_pool import AsyncConnectionPool

#: Options in DATABASES["default"]["OPTIONS"] that only Django understands.
DJANGO_ONLY_OPTIONS = ("pool", "server_side_binding", "assume_role", "isolation_level", "cursor_factory", "context")

_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}
_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


def connection_kwargs(alias: str = "default") -> dict:
    """psycopg connection arguments for a Django database alias."""
    settings_dict = connections[alias].settings_dict
    kwargs = {key: value for key, value in (settings_dict.get("OPTIONS") or {}).items()
              if key not in DJANGO_ONLY_OPTIONS}
    kwargs["dbname"] = settings_dict["NAME"] or "postgres"
    for name, setting in (("user", "USER"), ("password", "PASSWORD"), ("host", "HOST"), ("port", "PORT")):
        if settings_dict.get(setting):
            kwargs[name] = settings_dict[setting]
    kwargs["autocommit"] = True
    kwargs["application_name"] = "swarm-fastpath"
    return kwargs


async def pool() -> AsyncConnectionPool:
    """This event loop's pool, opened on first use."""
    loop = asyncio.get_running_loop()
    existing = _pools.get(loop)
    if existing is not None:
        return existing
    lock = _locks.setdefault(loop, asyncio.Lock())
    async with lock:
        if loop not in _pools:
            size = settings.SWARM_FASTPATH_DB_CONNECTIONS
            created = AsyncConnectionPool(kwargs=connection_kwargs(), min_size=1, max_size=size, open=False,
                                          timeout=10.0, name="swarm-fastpath")
            await created.open()
            _pools[loop] = created
    return _pools[loop]


async def close_pools() -> None:
    """Close this event loop's pool (tests, shutdown)."""
    loop = asyncio.get_running_loop()
    existing = _pools.pop(loop, None)
    if existing is not None:
        await existing.close()
