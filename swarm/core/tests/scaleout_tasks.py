"""A probe task for the scale-out tests, imported only by their workers (`celery worker -I`).

It counts its starts and its completions in Redis and sleeps in between, so
a test can SIGKILL the worker that runs it and see it start again elsewhere
and complete exactly once.
"""
import os
import time

import redis
from celery import shared_task
from django.conf import settings


@shared_task(name="scaleout.probe", acks_late=True, reject_on_worker_lost=True)
def scaleout_probe(key: str, seconds: float) -> None:
    """Record a start, sleep `seconds`, record a completion (once per key, whatever the redeliveries)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.rpush(f"{key}:starts", os.environ.get("SCALEOUT_WORKER_NAME", "worker"))
    time.sleep(seconds)
    # Idempotent like every task: a redelivery after a completed run does not complete again.
    if client.set(f"{key}:done", os.environ.get("SCALEOUT_WORKER_NAME", "worker"), nx=True):
        client.incr(f"{key}:completions")
