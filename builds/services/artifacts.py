"""Artifacts: the agent announces a file, uploads it (through the server or straight to S3), it is verified.

Nothing counts as stored until its size and sha256 match what was
announced; a mismatch keeps no bytes.
"""
from __future__ import annotations

import hashlib
import posixpath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from builds.choices import ArtifactState
from builds.models import Artifact, Build, BuildAttempt
from builds.services.held import build_held_get
from bundles.blobstore import BlobStore
from bundles.keys import is_sha256_hex
from swarm.core.errors import ApiError, Conflict


def artifact_storage_key(*, build: Build, attempt_number: int, artifact_id: int, name: str) -> str:
    """Where an artifact's bytes live."""
    return f"builds/{build.pk}/attempts/{attempt_number}/artifacts/{artifact_id}/{name}"


def artifact_announce(*, build_id: int, drone, path: str, size: int, sha256: str,
                      attempt_number: int | None = None) -> Artifact:
    """Register an artifact the agent is about to upload (state `pending`)."""
    build = build_held_get(build_id=build_id, drone=drone, attempt_number=attempt_number)
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        raise ApiError("path: must be a relative path inside the workspace", code="invalid", field="path")
    if not isinstance(size, int) or size < 0 or size > settings.SWARM_BUILD_ARTIFACT_MAX_BYTES:
        raise ApiError(f"size: must be between 0 and {settings.SWARM_BUILD_ARTIFACT_MAX_BYTES} bytes",
                       code="invalid", field="size")
    if not is_sha256_hex((sha256 or "").lower()):
        raise ApiError("sha256: must be a 64-character hex digest", code="invalid", field="sha256")
    attempt = BuildAttempt.objects.get(build=build, number=build.attempt_count)
    name = posixpath.basename(path)
    try:
        with transaction.atomic():
            artifact = Artifact.objects.create(build=build, attempt=attempt, name=name, path=path, size=size,
                                               sha256=sha256.lower(), storage_key="")
    except IntegrityError:
        artifact = Artifact.objects.get(attempt=attempt, path=path)
        if artifact.state == ArtifactState.STORED:
            raise Conflict(f"Artifact {path!r} is already stored for this attempt.", field="path")
        artifact.size, artifact.sha256 = size, sha256.lower()
    artifact.storage_key = artifact_storage_key(build=build, attempt_number=attempt.number,
                                                artifact_id=artifact.pk, name=name)
    artifact.save(update_fields=["storage_key", "size", "sha256"])
    return artifact


def artifact_store_stream(*, artifact: Artifact, stream, chunk_size: int = 1024 * 1024) -> Artifact:
    """Stream an artifact's bytes into storage, hashing as they go; a mismatch keeps nothing."""
    store = BlobStore()
    writer = store.writer(known_key=None)
    digest = hashlib.sha256()
    size = 0
    try:
        while True:
            data = stream.read(chunk_size)
            if not data:
                break
            size += len(data)
            if size > artifact.size:
                raise ApiError(f"The upload is larger than the announced {artifact.size} bytes.",
                               code="size_mismatch")
            digest.update(data)
            writer.write(data)
        if size != artifact.size:
            raise ApiError(f"Received {size} bytes, announced {artifact.size}.", code="size_mismatch")
        if digest.hexdigest() != artifact.sha256:
            raise ApiError("The uploaded bytes do not match the announced sha256.", code="sha256_mismatch",
                           field="sha256")
        if store.exists(artifact.storage_key):
            store.delete(artifact.storage_key)
        writer.commit(artifact.storage_key)
    except BaseException:
        writer.abort()
        raise
    return _artifact_mark_stored(artifact)


def artifact_verify_stored(*, artifact: Artifact) -> Artifact:
    """After a presigned PUT straight to S3: read the object back and check size and sha256."""
    store = BlobStore()
    if not store.exists(artifact.storage_key):
        raise ApiError("Nothing was uploaded for this artifact.", code="not_uploaded")
    digest = hashlib.sha256()
    size = 0
    with store.open(artifact.storage_key) as handle:
        while True:
            data = handle.read(1024 * 1024)
            if not data:
                break
            size += len(data)
            digest.update(data)
    if size != artifact.size or digest.hexdigest() != artifact.sha256:
        store.delete(artifact.storage_key)
        raise ApiError("The uploaded object does not match the announced size and sha256; it was removed.",
                       code="sha256_mismatch", field="sha256")
    return _artifact_mark_stored(artifact)


def _artifact_mark_stored(artifact: Artifact) -> Artifact:
    artifact.state = ArtifactState.STORED
    artifact.stored_at = timezone.now()
    artifact.save(update_fields=["state", "stored_at"])
    return artifact
