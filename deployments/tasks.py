"""Celery tasks of the deployment manager: each takes a primary key and calls one service."""
from __future__ import annotations

from celery import shared_task


@shared_task(name="deployments.catalog_fetch", acks_late=True, autoretry_for=(OSError,), retry_backoff=True,
             max_retries=3)
def catalog_fetch(fetch_id: int) -> str:
    """Clone a queued git catalog import and import it (`services.catalog_fetch_run`); answers its final state."""
    from deployments.services import catalog_fetch_run

    return catalog_fetch_run(fetch_id=fetch_id).state


@shared_task(name="deployments.package_advance", acks_late=True, autoretry_for=(OSError,), retry_backoff=True,
             max_retries=5)
def package_advance(run_id: int) -> str:
    """Take a package run one step further (`packaging.package_advance`); looks again while its builds run."""
    from deployments.packaging import package_advance as advance

    wait = advance(run_id=run_id)
    if wait is not None:
        package_advance.apply_async((run_id,), countdown=wait)
    return "waiting" if wait is not None else "finished"
