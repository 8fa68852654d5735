"""Celery tasks of the bundle store (thin wrappers around services)."""
from celery import shared_task

from bundles.services import bundle_sweep_orphans


@shared_task(name="bundles.sweep_orphan_blobs", acks_late=True, autoretry_for=(ConnectionError,),
             retry_backoff=True, max_retries=3)
def sweep_orphan_blobs() -> dict:
    """Remove blobs no version references (idempotent: a rerun finds nothing new)."""
    report = bundle_sweep_orphans()
    return {
        "deleted_blobs": len(report.deleted_blobs),
        "deleted_rows": len(report.deleted_rows),
        "aborted_uploads": report.aborted_uploads,
        "removed_spool_files": report.removed_spool_files,
    }
