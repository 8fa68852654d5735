"""Celery tasks of executions: thin wrappers that take ids and call services.

Services import this module at their top and enqueue with
`transaction.on_commit(lambda: task.delay(pk))`; each task imports the
service it calls inside its body, so the two never import each other at
module level.
"""
from celery import shared_task
from django.db import OperationalError


@shared_task(name="workflows.provision_execution", acks_late=True, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=5)
def provision_execution(execution_id: int) -> None:
    """Issue the metadata token and start the runtime (no-op unless the execution is pending)."""
    from workflows.services.executions import execution_provision

    execution_provision(execution_id=execution_id)


@shared_task(name="workflows.stop_execution_runtime", acks_late=True, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=5)
def stop_execution_runtime(execution_id: int) -> None:
    """Kill what still runs for a cancelled or timed-out execution (idempotent)."""
    from workflows.services.executions import execution_stop_runtime

    execution_stop_runtime(execution_id=execution_id)


@shared_task(name="workflows.reap_executions", acks_late=True, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=2)
def reap_executions() -> dict:
    """Beat: time out overdue executions, fail those whose boot vanished."""
    from workflows.services.executions import executions_reap

    return executions_reap()


@shared_task(name="workflows.evaluate_canary", acks_late=True, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=5)
def evaluate_canary(workflow_id: int) -> None:
    """Judge a workflow's canary after one of its candidate's executions finished (idempotent)."""
    from workflows.services.canary import workflow_canary_evaluate

    workflow_canary_evaluate(workflow_id=workflow_id)
