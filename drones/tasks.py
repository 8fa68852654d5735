"""Celery tasks of the drones app (beat: `drones.check_health`, `drones.sample_fleet`)."""
from celery import shared_task

from drones.ladder import drone_evaluate, fleet_evaluate


@shared_task(name="drones.check_health", acks_late=True, ignore_result=True,
             autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
def check_health() -> int:
    """Health check + ladder step for every drone (each under its own row lock); returns how many acted."""
    return sum(1 for evaluation in fleet_evaluate() if evaluation.outcome == "acted")


@shared_task(name="drones.evaluate_drone", acks_late=True, ignore_result=True,
             autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
def evaluate_drone(drone_id: int) -> str:
    """Health check + ladder step for one drone (e.g. right after an operator action)."""
    return drone_evaluate(drone_id=drone_id).outcome


@shared_task(name="drones.sample_fleet", acks_late=True, ignore_result=True,
             autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
def sample_fleet() -> int:
    """The topology scrubber's per-minute sample of every drone (and the retention sweep); returns its id."""
    from drones.topology.history import fleet_sample_take

    return fleet_sample_take().pk
# Payload tasks live with their code; importing them here registers them with Celery's autodiscovery.
from drones.payloads.tasks import advance_rollout, check_payload_drift, tick_rollouts  # noqa: E402,F401
