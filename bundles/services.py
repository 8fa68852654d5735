"""Writes for the bundle store: publishing received blobs and sweeping orphans."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from swarm_agent.bundle_safety import BundleLimits, BundleRejected

from bundles.blobstore import BlobStore
from bundles.keys import BLOB_PREFIX, INCOMING_PREFIX, blob_key, sha256_from_key
from bundles.models import Bundle, PendingBlob
from bundles.upload import ReceivedBundle
from swarm.core.errors import ApiError

logger = logging.getLogger(__name__)


def bundle_limits() -> BundleLimits:
    """The configured tar-bomb limits."""
    return BundleLimits(
        max_members=settings.SWARM_BUNDLE_MAX_MEMBERS,
        max_unpacked_bytes=settings.SWARM_BUNDLE_MAX_UNPACKED_BYTES,
        max_ratio=settings.SWARM_BUNDLE_MAX_RATIO,
        ratio_floor_bytes=settings.SWARM_BUNDLE_RATIO_FLOOR_BYTES,
    )


def bundle_check_received(*, received: ReceivedBundle, declared_sha256: str | None) -> None:
    """Refuse a received bundle whose digest or contents break the rules; nothing is kept."""
    if declared_sha256 and declared_sha256.lower() != received.sha256:
        received.discard()
        raise ApiError(
            f"The bundle's sha256 is {received.sha256}, not the declared {declared_sha256}.",
            code="hash_mismatch",
            field="sha256",
        )
    try:
        summary = received.inspector.finish()
    except BundleRejected as rejected:
        received.writer.abort()
        raise ApiError(rejected.detail, code=rejected.code, field="bundle", status_code=rejected.status) from None
    if received.client_gone():
        # Nobody is waiting for the answer: register nothing (what was written is aborted here).
        received.writer.abort()
        raise ApiError("The client disconnected before the bundle was registered; nothing was kept.",
                       code="client_disconnected", field="bundle")
    received.summary = summary


@dataclass(frozen=True)
class PublishedBundle:
    """The bundle row of a published blob, whether this upload created it, and its in-flight marker."""

    bundle: Bundle
    created: bool
    marker_id: int


def bundle_publish(*, received: ReceivedBundle) -> PublishedBundle:
    """Make a checked upload visible under its content key and record it.

    The PendingBlob marker is committed before the blob appears and stays
    until the caller has committed the row that references the bundle
    (`bundle_release_marker`), so the sweep never removes a blob or an
    unreferenced bundle row that a registration is about to use.
    """
    key = blob_key(received.sha256)
    store = BlobStore()
    marker = PendingBlob.objects.create(key=key)
    try:
        stored_now = received.writer.commit(key)
        bundle, created = Bundle.objects.get_or_create(
            sha256=received.sha256,
            defaults={
                "size": received.size,
                "member_count": received.summary.member_count,
                "unpacked_size": received.summary.unpacked_size,
            },
        )
        if not created and not stored_now and not store.exists(key):
            logger.error("bundle %s has a row but no blob in storage", received.sha256)
    except BaseException:
        marker.delete()
        raise
    return PublishedBundle(bundle=bundle, created=created, marker_id=marker.pk)


def bundle_release_marker(*, published: PublishedBundle) -> None:
    """Drop the in-flight marker of a publish once its referencing row is committed (or abandoned)."""
    PendingBlob.objects.filter(pk=published.marker_id).delete()


@contextmanager
def bundle_referenced(*, received: ReceivedBundle) -> Iterator[Bundle]:
    """Publish a checked upload and yield its bundle row, locked, inside a transaction for the referencing row.

    Everything that stores content as a bundle (workflow versions, payload
    versions) registers through this, so the sweep race is handled once:
    holding the bundle row until the referencing row commits keeps the orphan
    sweep off it, and if the sweep got there first (an old unreferenced row
    reused by this upload) the caller gets a 503 to retry. On any error a
    bundle this upload created is discarded again; the in-flight marker is
    dropped in every case.
    """
    published = bundle_publish(received=received)
    try:
        with transaction.atomic():
            if not Bundle.objects.select_for_update().filter(pk=published.bundle.pk).exists():
                raise ApiError("The orphan sweep removed this bundle while it was being registered; upload it again.",
                               code="upload_raced_sweep", status_code=503, headers={"Retry-After": "1"})
            yield published.bundle
    except BaseException:
        if published.created:
            bundle_discard_if_unreferenced(bundle=published.bundle)
        raise
    finally:
        bundle_release_marker(published=published)


def bundle_discard_if_unreferenced(*, bundle: Bundle, respect_markers: bool = False) -> bool:
    """Delete a bundle row and blob that no version uses (after a refused registration, or by the sweep).

    With `respect_markers` (the sweep), a bundle that an upload has marked as
    in flight is kept; the check runs under the row lock.
    """
    with transaction.atomic():
        locked = Bundle.objects.select_for_update().filter(pk=bundle.pk).first()
        if locked is None or not Bundle.objects.unreferenced().filter(pk=locked.pk).exists():
            return False
        if respect_markers and PendingBlob.objects.filter(key=locked.storage_key).exists():
            return False
        key = locked.storage_key
        locked.delete()
    BlobStore().delete(key)
    return True


@dataclass(frozen=True)
class SweepReport:
    """What one orphan sweep removed."""

    deleted_blobs: list[str]
    deleted_rows: list[str]
    aborted_uploads: int
    removed_spool_files: int


def bundle_sweep_orphans(*, grace_seconds: int | None = None) -> SweepReport:
    """Remove blobs and bundle rows that no version references.

    Only what is older than the grace period and not marked as in flight is
    touched, so an upload between "blob written" and "row committed" is safe.
    """
    grace = timedelta(seconds=settings.SWARM_ORPHAN_GRACE_SECONDS if grace_seconds is None else grace_seconds)
    cutoff = timezone.now() - grace
    store = BlobStore()
    stale_marker_cutoff = timezone.now() - max(grace, timedelta(hours=6))
    in_flight = set(PendingBlob.objects.filter(started_at__gte=stale_marker_cutoff).values_list("key", flat=True))
    PendingBlob.objects.filter(started_at__lt=stale_marker_cutoff).delete()

    deleted_rows = []
    for bundle in Bundle.objects.unreferenced().filter(created_at__lt=cutoff):
        if bundle.storage_key in in_flight:
            continue
        if bundle_discard_if_unreferenced(bundle=bundle, respect_markers=True):
            deleted_rows.append(bundle.sha256)

    referenced = set(Bundle.objects.values_list("sha256", flat=True))
    deleted_blobs = []
    for blob in store.list_blobs(BLOB_PREFIX):
        digest = sha256_from_key(blob.key)
        if digest is None or digest in referenced or blob.key in in_flight or blob.last_modified >= cutoff:
            continue
        store.delete(blob.key)
        deleted_blobs.append(blob.key)

    removed_spool_files = 0
    if not store.is_s3:
        for blob in store.list_blobs(INCOMING_PREFIX):
            if blob.last_modified < cutoff:
                store.delete(blob.key)
                removed_spool_files += 1
    aborted = store.abort_stale_multipart_uploads(cutoff)
    report = SweepReport(deleted_blobs, deleted_rows, aborted, removed_spool_files)
    if deleted_blobs or deleted_rows or aborted or removed_spool_files:
        logger.info("orphan sweep: %s", report)
    return report
