"""Celery tasks of the builds app: thin wrappers that take ids and call services."""
from celery import shared_task

from builds import notifications, services, webhooks


@shared_task(name="builds.reap", acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def reap_builds() -> dict:
    """Beat: fail expired leases, stuck and overtime builds; requeue unacknowledged ones."""
    report = services.builds_reap()
    return {"requeued_unacknowledged": report.requeued_unacknowledged, "lease_expired": report.lease_expired,
            "stuck": report.stuck, "timed_out": report.timed_out}


@shared_task(name="builds.process_webhook_delivery", acks_late=True, autoretry_for=(Exception,),
             retry_backoff=True, max_retries=5)
def process_webhook_delivery(delivery_id: int) -> list[int]:
    """Queue the builds a recorded webhook delivery asks for (once)."""
    delivery = webhooks.webhook_delivery_process(delivery_id=delivery_id)
    return list(delivery.build_ids) if delivery else []


@shared_task(name="builds.archive_attempt_log", acks_late=True, autoretry_for=(Exception,), retry_backoff=True,
             max_retries=8)
def archive_attempt_log(attempt_id: int) -> bool:
    """Concatenate a finished attempt's log chunks into one blob."""
    return services.attempt_archive_log(attempt_id=attempt_id)


@shared_task(name="builds.archive_pending_logs", acks_late=True)
def archive_pending_logs() -> int:
    """Beat: archive logs of finished attempts whose archive task was lost."""
    return services.attempts_archive_pending()


@shared_task(name="builds.notify_build_finished", acks_late=True, autoretry_for=(Exception,), retry_backoff=True,
             max_retries=5)
def notify_build_finished(build_id: int) -> list[str]:
    """E-mail and webhook notifications of a finished build."""
    return notifications.build_notify_finished(build_id=build_id)
