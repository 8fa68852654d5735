"""The orphan sweep: blobs and bundle rows no version references go; in-flight and referenced ones stay."""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from bundles.blobstore import BlobStore
from bundles.keys import INCOMING_PREFIX, blob_key
from bundles.models import Bundle, PendingBlob
from bundles.services import bundle_sweep_orphans
from bundles.tasks import sweep_orphan_blobs
from conftest import make_bundle, upload
from workflows.tests.factories import make_version, make_workflow

pytestmark = pytest.mark.django_db

HOUR = 3600


def write_blob(data: bytes | None = None) -> tuple[str, str]:
    """Put bytes straight into blob storage under their content key, with no row (a crash mid-registration)."""
    data = data or make_bundle()
    digest = hashlib.sha256(data).hexdigest()
    key = blob_key(digest)
    BlobStore().storage.save(key, ContentFile(data))
    assert BlobStore().exists(key)
    return digest, key


def age_local_file(path, seconds: int) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_orphan_blob_older_than_grace_is_removed(settings):
    _, key = write_blob()
    report = bundle_sweep_orphans(grace_seconds=0)
    assert key in report.deleted_blobs
    assert not BlobStore().exists(key)


def test_orphan_blob_younger_than_grace_is_kept():
    _, key = write_blob()
    report = bundle_sweep_orphans(grace_seconds=HOUR)
    assert key not in report.deleted_blobs
    assert BlobStore().exists(key)


def test_blob_with_pending_marker_is_kept():
    _, key = write_blob()
    PendingBlob.objects.create(key=key)
    report = bundle_sweep_orphans(grace_seconds=0)
    assert key not in report.deleted_blobs
    assert BlobStore().exists(key)
    assert PendingBlob.objects.filter(key=key).exists()


def test_stale_pending_marker_stops_protecting_its_blob():
    _, key = write_blob()
    marker = PendingBlob.objects.create(key=key)
    PendingBlob.objects.filter(pk=marker.pk).update(started_at=timezone.now() - timedelta(hours=7))
    report = bundle_sweep_orphans(grace_seconds=0)
    assert key in report.deleted_blobs
    assert not PendingBlob.objects.filter(pk=marker.pk).exists()


def test_unreferenced_bundle_row_older_than_grace_is_removed_with_its_blob():
    digest, key = write_blob()
    bundle = Bundle.objects.create(sha256=digest, size=1, member_count=1, unpacked_size=1)
    Bundle.objects.filter(pk=bundle.pk).update(created_at=timezone.now() - timedelta(hours=2))
    report = bundle_sweep_orphans(grace_seconds=HOUR)
    assert digest in report.deleted_rows
    assert not Bundle.objects.filter(pk=bundle.pk).exists()
    assert not BlobStore().exists(key)


def test_unreferenced_bundle_row_younger_than_grace_is_kept():
    digest, key = write_blob()
    Bundle.objects.create(sha256=digest, size=1, member_count=1, unpacked_size=1)
    report = bundle_sweep_orphans(grace_seconds=HOUR)
    assert digest not in report.deleted_rows
    assert Bundle.objects.filter(sha256=digest).exists()
    assert BlobStore().exists(key)


def test_unreferenced_bundle_row_with_pending_marker_is_kept():
    digest, key = write_blob()
    bundle = Bundle.objects.create(sha256=digest, size=1, member_count=1, unpacked_size=1)
    Bundle.objects.filter(pk=bundle.pk).update(created_at=timezone.now() - timedelta(hours=2))
    PendingBlob.objects.create(key=key)
    bundle_sweep_orphans(grace_seconds=HOUR)
    assert Bundle.objects.filter(pk=bundle.pk).exists()
    assert BlobStore().exists(key)


def test_referenced_blobs_are_never_removed(engine_api):
    data = make_bundle()
    response = upload(engine_api, data)
    assert response.status_code == 201
    digest = response.json()["bundle_hash"]
    Bundle.objects.filter(sha256=digest).update(created_at=timezone.now() - timedelta(days=30))
    report = bundle_sweep_orphans(grace_seconds=0)
    assert blob_key(digest) not in report.deleted_blobs
    assert digest not in report.deleted_rows
    assert BlobStore().exists(blob_key(digest))
    with BlobStore().open(blob_key(digest)) as handle:
        assert handle.read() == data
    assert not PendingBlob.objects.exists()  # the upload released its marker


def test_bundle_shared_by_a_deleted_workflow_and_a_live_one_is_kept(tenant):
    digest, key = write_blob()
    bundle = Bundle.objects.create(sha256=digest, size=1, member_count=1, unpacked_size=1)
    make_version(make_workflow(tenant, "live"), "1.0.0", bundle=bundle)
    doomed = make_workflow(tenant, "doomed")
    make_version(doomed, "1.0.0", bundle=bundle)
    doomed.delete()
    Bundle.objects.filter(pk=bundle.pk).update(created_at=timezone.now() - timedelta(days=1))
    bundle_sweep_orphans(grace_seconds=0)
    assert Bundle.objects.filter(pk=bundle.pk).exists()
    assert BlobStore().exists(key)


def test_keys_outside_the_blob_layout_are_left_alone():
    store = BlobStore()
    odd = f"bundles/sha256/zz/not-a-digest-{uuid.uuid4().hex}.txt"
    store.storage.save(odd, ContentFile(b"operator's note"))
    bundle_sweep_orphans(grace_seconds=0)
    assert store.exists(odd)
    store.delete(odd)


def test_stale_multipart_uploads_are_aborted():
    store = BlobStore()
    client, bucket = store.s3_client(), store.storage.bucket_name
    key = blob_key(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"half a bundle")

    def open_upload_ids():
        return {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket, Prefix="bundles/").get(
            "Uploads", [])}

    assert upload_id in open_upload_ids()
    assert bundle_sweep_orphans(grace_seconds=HOUR).aborted_uploads == 0
    assert upload_id in open_upload_ids()
    time.sleep(1.1)  # S3 reports initiation times with one-second precision
    report = bundle_sweep_orphans(grace_seconds=0)
    assert report.aborted_uploads >= 1
    assert upload_id not in open_upload_ids()
    assert not store.exists(key)


def test_celery_task_sweeps_with_configured_grace(settings):
    assert sweep_orphan_blobs.name == "bundles.sweep_orphan_blobs"
    assert sweep_orphan_blobs.acks_late is True
    assert settings.CELERY_BEAT_SCHEDULE["bundles.sweep_orphan_blobs"]["options"]["expires"] > 0

    _, young_key = write_blob()
    settings.SWARM_ORPHAN_GRACE_SECONDS = HOUR
    result = sweep_orphan_blobs.apply().get()
    assert BlobStore().exists(young_key)

    settings.SWARM_ORPHAN_GRACE_SECONDS = 0
    result = sweep_orphan_blobs.apply().get()
    assert result["deleted_blobs"] >= 1
    assert not BlobStore().exists(young_key)
    again = sweep_orphan_blobs.apply().get()  # idempotent: a redelivery finds nothing of this test left
    assert again["deleted_blobs"] == 0


def test_sweep_on_local_storage(local_blob_storage, engine_api):
    response = upload(engine_api, make_bundle())
    referenced_key = blob_key(response.json()["bundle_hash"])
    _, old_orphan = write_blob()
    _, young_orphan = write_blob()
    _, pending = write_blob()
    PendingBlob.objects.create(key=pending)
    for key in (referenced_key, old_orphan, pending):
        age_local_file(local_blob_storage / key, 2 * HOUR)
    spool = local_blob_storage / INCOMING_PREFIX / "crashed-upload.part"
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_bytes(b"partial upload")
    age_local_file(spool, 2 * HOUR)
    fresh_spool = local_blob_storage / INCOMING_PREFIX / "in-progress.part"
    fresh_spool.write_bytes(b"uploading")

    report = bundle_sweep_orphans(grace_seconds=HOUR)

    assert report.deleted_blobs == [old_orphan]
    assert report.removed_spool_files == 1
    assert report.aborted_uploads == 0
    assert (local_blob_storage / referenced_key).exists()
    assert not (local_blob_storage / old_orphan).exists()
    assert (local_blob_storage / young_orphan).exists()
    assert (local_blob_storage / pending).exists()
    assert not spool.exists()
    assert fresh_spool.exists()
