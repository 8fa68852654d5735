"""Celery tasks of the builds app: thin wrappers that take ids and call services.

Services import this module at their top and enqueue with
`transaction.on_commit(lambda: task.delay(pk))`; each task imports the
services it calls inside its body, so the two never import each other at
module level.
"""
from celery import shared_task

from builds import notifications


@shared_task(name="builds.reap", acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def reap_builds() -> dict:
    """Beat: fail expired leases, stuck and overtime builds; requeue unacknowledged ones."""
    from builds.services.reaper import builds_reap

    report = builds_reap()
    return {"requeued_unacknowledged": report.requeued_unacknowledged, "lease_expired": report.lease_expired,
            "stuck": report.stuck, "timed_out": report.timed_out}


@shared_task(name="builds.process_webhook_delivery", acks_late=True, autoretry_for=(Exception,),
             retry_backoff=True, max_retries=5)
def process_webhook_delivery(delivery_id: int) -> list[int]:
    """Queue the builds a recorded webhook delivery asks for (once)."""
    from builds.services.webhooks import webhook_delivery_process

    delivery = webhook_delivery_process(delivery_id=delivery_id)
    return list(delivery.build_ids) if delivery else []


@shared_task(name="builds.archive_attempt_log", acks_late=True, autoretry_for=(Exception,), retry_backoff=True,
             max_retries=8)
def archive_attempt_log(attempt_id: int) -> bool:
    """Concatenate a finished attempt's log chunks into one blob."""
    from builds.services.logs import attempt_archive_log

    return attempt_archive_log(attempt_id=attempt_id)


@shared_task(name="builds.archive_pending_logs", acks_late=True)
def archive_pending_logs() -> int:
    """Beat: archive logs of finished attempts whose archive task was lost."""
    from builds.services.logs import attempts_archive_pending

    return attempts_archive_pending()


@shared_task(name="builds.notify_build_finished", acks_late=True, autoretry_for=(Exception,), retry_backoff=True,
             max_retries=5)
def notify_build_finished(build_id: int) -> list[str]:
    """E-mail and webhook notifications of a finished build."""
    return notifications.build_notify_finished(build_id=build_id)
