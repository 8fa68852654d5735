"""Liveness (`/healthz`) and readiness (`/readyz`) probes."""
import logging

import redis
from django.conf import settings
from django.core.files.storage import storages
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@require_GET
def healthz(request):
    """The process is alive and serving requests."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _check_storage() -> None:
    storage = storages["blobs"]
    # listdir on the bundle prefix touches the bucket (or directory) without
    # reading a blob; a missing local directory simply means nothing stored yet.
    try:
        storage.listdir("bundles/")
    except FileNotFoundError:
        pass


READINESS_CHECKS = {"database": _check_database, "redis": _check_redis, "storage": _check_storage}


def _runtimes() -> dict:
    """Each execution runtime's availability here (informational: an unavailable one is not "not ready")."""
    from workflows.runtimes import get_runtime, runtime_names

    report = {}
    for name in runtime_names():
        try:
            availability = get_runtime(name).availability()
        except Exception as exc:  # noqa: BLE001 - a broken runtime is reported, never a 500
            report[name] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        report[name] = {"available": availability.available, **availability.details,
                        **({"reason": availability.reason} if availability.reason else {})}
    return report


@require_GET
def readyz(request):
    """Database, Redis and blob storage are reachable; 503 naming any that is not.

    `runtimes` says which execution runtimes can start work here, and on what
    (the microVM's accelerator: `kvm` or `tcg`).
    """
    checks, failed = {}, []
    for name, check in READINESS_CHECKS.items():
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            logger.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
            failed.append(name)
    body = {"status": "ok" if not failed else "unavailable", "checks": checks, "runtimes": _runtimes()}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)
