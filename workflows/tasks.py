"""Celery tasks of executions: thin wrappers that take ids and call services."""
from celery import shared_task
from django.db import OperationalError

from workflows import execution_services


@shared_task(name="workflows.provision_execution", acks_late=True, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=5)
def provision_execution(execution_id: int) -> None:
    """Issue the metadata token and start the runtime (no-op unless the execution is pending)."""
    execution_services.execution_provision(execution_id=execution_id)


@shared_task(name="workflows.stop_execution_runtime", acks_late=True, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=5)
def stop_execution_runtime(execution_id: int) -> None:
    """Kill what still runs for a cancelled or timed-out execution (idempotent)."""
    execution_services.execution_stop_runtime(execution_id=execution_id)


@shared_task(name="workflows.reap_executions", acks_late=True, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=2)
def reap_executions() -> dict:
    """Beat: time out overdue executions, fail those whose boot vanished."""
    return execution_services.executions_reap()
