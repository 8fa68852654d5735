"""Waking the rollout engine: coalesced immediate wakes and timed wakes, both after commit.

Agent reports arrive in bursts (a wave of 50 drones finishing together); each
would enqueue its own `drones.advance_rollout`. A Redis key per rollout
coalesces them: the first report after the engine last *started* enqueues a
task and sets the key; later ones see the key and do nothing, because the
queued task deletes the key before it takes the lock and reads the state, so
it reads everything committed before that. If Redis fails, the task is
simply enqueued. Timed wakes (min_healthy_time, resend and deadlines) are
`countdown` tasks; beat (`drones.tick_rollouts`) wakes every active rollout
as well, so a lost message or a killed worker only delays a rollout.
"""
from __future__ import annotations

import logging
import time

from django.db import transaction

from drones.redis_client import key, redis_client

logger = logging.getLogger(__name__)

WAKE_KEY_SECONDS = 30


def _wake_key(rollout_id: int) -> str:
    return key("rollout-wake", int(rollout_id))


def _timer_key(rollout_id: int) -> str:
    return key("rollout-timer", int(rollout_id))


def rollout_wake_now(rollout_id: int) -> None:
    """Enqueue one advance of the rollout unless one is already queued (call after commit)."""
    from drones.payloads.tasks import advance_rollout

    try:
        if not redis_client().set(_wake_key(rollout_id), "1", nx=True, ex=WAKE_KEY_SECONDS):
            return
    except Exception:  # noqa: BLE001 - the task is idempotent: enqueue anyway
        logger.warning("rollout %s: wake coalescing unavailable", rollout_id, exc_info=True)
    advance_rollout.apply_async(args=[int(rollout_id)])


def rollout_wake_claimed(rollout_id: int) -> None:
    """The engine is about to read the rollout: the next report must enqueue a new wake."""
    try:
        redis_client().delete(_wake_key(rollout_id))
    except Exception:  # noqa: BLE001
        logger.warning("rollout %s: could not clear the wake key", rollout_id, exc_info=True)


def rollout_wake_on_commit(rollout_id: int) -> None:
    """Wake the rollout once the current transaction commits."""
    transaction.on_commit(lambda: rollout_wake_now(rollout_id))


def rollout_wake_later(rollout_id: int, *, seconds: float) -> None:
    """Advance the rollout again in `seconds` (an earlier pending timer is kept; a later one is overtaken)."""
    from drones.payloads.tasks import advance_rollout

    seconds = max(0.05, float(seconds))
    due = time.time() + seconds
    try:
        client = redis_client()
        pending = client.get(_timer_key(rollout_id))
        if pending is not None and float(pending) <= due + 0.05 and float(pending) > time.time():
            return
        client.set(_timer_key(rollout_id), repr(due), ex=int(seconds) + 5)
    except Exception:  # noqa: BLE001
        logger.warning("rollout %s: timer coalescing unavailable", rollout_id, exc_info=True)
    advance_rollout.apply_async(args=[int(rollout_id)], countdown=seconds)
