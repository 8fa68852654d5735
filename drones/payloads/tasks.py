"""Celery tasks of payloads: thin wrappers that take ids and call the engine and the drift check.

Registered through drones/tasks.py (Celery's autodiscovery imports `drones.tasks`).
"""
from celery import shared_task


@shared_task(name="drones.advance_rollout", acks_late=True, ignore_result=True,
             autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def advance_rollout(rollout_id: int) -> str:
    """One idempotent step of a rollout, under its advisory lock (drones.payloads.engine)."""
    from drones.payloads.engine import rollout_advance

    return rollout_advance(rollout_id=rollout_id).state


@shared_task(name="drones.tick_rollouts", acks_late=True, ignore_result=True)
def tick_rollouts() -> int:
    """Beat: wake every rollout that is not finished (covers lost wakes and killed workers)."""
    from drones.payloads.engine import rollouts_active_ids
    from drones.payloads.wake import rollout_wake_now

    rollout_ids = rollouts_active_ids()
    for rollout_id in rollout_ids:
        rollout_wake_now(rollout_id)
    return len(rollout_ids)


@shared_task(name="drones.check_payload_drift", acks_late=True, ignore_result=True,
             autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
def check_payload_drift(drone_id: int | None = None) -> int:
    """Beat (fleet-wide) or after a changed heartbeat hash (one drone): flag drift, reconcile where configured."""
    from drones.payloads.drift import drift_check

    return drift_check(drone_id=drone_id).changed
