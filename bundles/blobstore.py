"""Blob storage behind Django's storage API, plus streaming writers.

Reads, existence checks, deletes and download URLs go through the configured
Django storage (`STORAGES["blobs"]`: django-storages' S3 backend or the local
filesystem). Writes need more than `Storage.save()` offers — streaming with a
flat memory profile and an atomic "appear under the final key or not at all" —
so each backend gets a writer:

* local files: spool into `<root>/bundles/incoming/` and `os.replace()` into place;
* S3 with the digest known up front: a multipart upload straight to the final
  key, completed only after the digest and safety checks pass (aborted
  otherwise, so nothing is ever visible);
* S3 with the digest unknown: spool to a local temp file, then a concurrent
  multipart upload of the verified file.
"""
from __future__ import annotations

import io
import logging
import mmap
import os
import queue
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from pathlib import Path

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages

logger = logging.getLogger(__name__)

from bundles.keys import INCOMING_PREFIX

INCOMING_DIR = INCOMING_PREFIX.rstrip("/")


def blob_storage() -> Storage:
    """The configured blob storage."""
    return storages["blobs"]


def is_s3(storage: Storage) -> bool:
    """Whether the storage is django-storages' S3 backend."""
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # pragma: no cover - the dependency is pinned
        return False
    return isinstance(storage, S3Storage)


@dataclass(frozen=True)
class StoredBlob:
    """A key in blob storage and when it was last written."""

    key: str
    last_modified: datetime


class BlobWriter:
    """Receives a blob's bytes; `commit()` makes it appear under its key, `abort()` drops it."""

    bytes_written = 0

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def commit(self, key: str) -> bool:
        """Publish under `key`. Returns False when the key already held the blob."""
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class DiscardingWriter(BlobWriter):
    """For bytes that are already stored: hashed and inspected, never written."""

    def write(self, chunk: bytes) -> None:
        self.bytes_written += len(chunk)

    def commit(self, key: str) -> bool:
        return False

    def abort(self) -> None:
        return None


class LocalSpoolWriter(BlobWriter):
    """Write to a temp file; on commit, upload it (S3) or rename it into place (local)."""

    def __init__(self, store: BlobStore):
        self.store = store
        if isinstance(store.storage, FileSystemStorage):
            directory = Path(store.storage.path(INCOMING_DIR))
        else:
            directory = Path(settings.SWARM_UPLOAD_TEMP_DIR or tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{uuid.uuid4().hex}.part"
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.bytes_written += len(chunk)

    def commit(self, key: str) -> bool:
        self._file.close()
        try:
            if self.store.exists(key):
                return False
            if isinstance(self.store.storage, FileSystemStorage):
                target = Path(self.store.storage.path(key))
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path, target)
            else:
                self.store.upload_file(self.path, key)
            return True
        finally:
            self.path.unlink(missing_ok=True)

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class _PartBuffer:
    """One reusable part-sized buffer in anonymous memory (returned to the OS when closed).

    Buffers are `mmap`s rather than `bytes`: every part reuses the same pages,
    so the process never allocates (and fragments the heap with) a fresh
    multi-MiB object per part, and RSS stays at pool size × part size.
    """

    def __init__(self, size: int):
        self.memory = mmap.mmap(-1, size)
        self.view = memoryview(self.memory)
        self.length = 0

    def close(self) -> None:
        self.view.release()
        try:
            self.memory.close()
        except BufferError:  # a slice handed to botocore is still referenced; unmapped when collected
            logger.debug("part buffer still referenced at close; leaving it to the garbage collector")


class _PartReader(io.RawIOBase):
    """A seekable read-only file over the filled part of a `_PartBuffer` (what botocore sends).

    `read()` returns memoryview slices of the buffer instead of bytes copies:
    botocore reads each part three times (SigV4 payload hash, checksum, socket
    send) and all of them accept any buffer, so no part is ever copied again.
    """

    def __init__(self, buffer: _PartBuffer):
        super().__init__()
        self._view = buffer.view[: buffer.length]
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        count = min(len(target), len(self._view) - self._position)
        target[:count] = self._view[self._position:self._position + count]
        self._position += count
        return count

    def read(self, size: int = -1) -> memoryview:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        chunk = self._view[self._position:end]
        self._position = end
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, min(len(self._view), base + offset))
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return len(self._view)

    def close(self) -> None:
        self._view.release()
        super().close()


class S3MultipartWriter(BlobWriter):
    """Stream parts to an S3 multipart upload from background threads.

    Incoming bytes are copied into one of `upload_threads + 1` fixed
    part buffers; a full buffer is handed to an uploader thread and comes back
    to the pool once S3 has it. `write()` blocks while every buffer is busy,
    which is the back-pressure that keeps memory flat (pool size × part size)
    whatever the blob size. The upload only becomes an object on `commit()`.
    """

    def __init__(self, store: BlobStore, key: str, part_size: int | None = None, upload_threads: int | None = None):
        self.store = store
        self.key = key
        self.part_size = part_size or settings.SWARM_S3_PART_SIZE
        threads = upload_threads or settings.SWARM_S3_UPLOAD_THREADS
        self.client = store.s3_client()
        self.bucket = store.storage.bucket_name
        self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        self._pool = [_PartBuffer(self.part_size) for _ in range(threads + 1)]
        self._free: queue.Queue = queue.Queue()
        for buffer in self._pool:
            self._free.put(buffer)
        self._current: _PartBuffer | None = None
        self._next_part_number = 1
        self._closed = False
        self._parts: list[dict] = []
        self._parts_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._upload_parts, name=f"s3-part-uploader-{index}", daemon=True)
            for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _upload_parts(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            number, buffer = item
            try:
                if self._error is None:
                    with _PartReader(buffer) as body:
                        response = self.client.upload_part(
                            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body,
                        )
                    with self._parts_lock:
                        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
            except BaseException as exc:  # noqa: BLE001 - surfaced on write/commit
                self._error = exc
            finally:
                buffer.length = 0
                self._free.put(buffer)

    def _send_current(self) -> None:
        self._queue.put((self._next_part_number, self._current))
        self._next_part_number += 1
        self._current = None

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self.bytes_written += len(chunk)
        data = memoryview(chunk)
        while data:
            if self._current is None:
                self._current = self._free.get()  # blocks while every buffer is being uploaded
                if self._error is not None:
                    raise self._error
            buffer = self._current
            count = min(len(data), self.part_size - buffer.length)
            buffer.view[buffer.length:buffer.length + count] = data[:count]
            buffer.length += count
            data = data[count:]
            if buffer.length == self.part_size:
                self._send_current()

    def _finish_threads(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        for buffer in self._pool:
            buffer.close()

    def commit(self, key: str) -> bool:
        if key != self.key:
            raise ValueError(f"multipart upload was started for {self.key}, not {key}")
        self._closed = True
        if self._current is not None and (self._current.length or self._next_part_number == 1):
            self._send_current()  # the last part may be short; S3 wants at least one
        elif self._next_part_number == 1:
            self._current = self._free.get()
            self._send_current()
        self._finish_threads()
        if self._error is not None:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            raise self._error
        parts = sorted(self._parts, key=lambda part: part["PartNumber"])
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
        )
        return True

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = self._error or RuntimeError("aborted")
        self._finish_threads()
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception:  # noqa: BLE001 - the sweep aborts stale uploads too
            logger.warning("could not abort multipart upload %s of %s", self.upload_id, self.key, exc_info=True)


class BlobStore:
    """Blob operations on the configured storage."""

    def __init__(self, storage: Storage | None = None):
        self.storage = storage or blob_storage()

    @property
    def is_s3(self) -> bool:
        return is_s3(self.storage)

    def s3_client(self):
        """The boto3 client of the S3 storage."""
        return self.storage.connection.meta.client

    def exists(self, key: str) -> bool:
        return self.storage.exists(key)

    def size(self, key: str) -> int:
        return self.storage.size(key)

    def open(self, key: str):
        return self.storage.open(key, "rb")

    def delete(self, key: str) -> None:
        self.storage.delete(key)

    def local_path(self, key: str) -> Path:
        """The file behind a key on local storage."""
        return Path(self.storage.path(key))

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A short-lived S3 GET URL for the blob."""
        return self.s3_client().generate_presigned_url(
            "get_object", Params={"Bucket": self.storage.bucket_name, "Key": key}, ExpiresIn=expires_in
        )

    def upload_file(self, path: Path, key: str) -> None:
        """Concurrent multipart upload of a local file (S3 only)."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_chunksize=settings.SWARM_S3_PART_SIZE,
                                max_concurrency=settings.SWARM_S3_UPLOAD_THREADS)
        self.s3_client().upload_file(str(path), self.storage.bucket_name, key, Config=config)

    def writer(self, *, known_key: str | None) -> BlobWriter:
        """A writer for a new blob. `known_key` is its final key when the digest is declared."""
        if known_key and self.exists(known_key):
            return DiscardingWriter()
        if known_key and self.is_s3:
            return S3MultipartWriter(self, known_key)
        return LocalSpoolWriter(self)

    def list_blobs(self, prefix: str) -> Iterator[StoredBlob]:
        """Every stored key under `prefix`, with its modification time."""
        if self.is_s3:
            paginator = self.s3_client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.storage.bucket_name, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield StoredBlob(key=item["Key"], last_modified=item["LastModified"])
            return
        root = Path(self.storage.path(""))
        base = root / prefix
        if not base.exists():
            return
        for path in base.rglob("*"):
            if path.is_file():
                modified = datetime.fromtimestamp(path.stat().st_mtime, tz=dt_timezone.utc)
                yield StoredBlob(key=path.relative_to(root).as_posix(), last_modified=modified)

    def abort_stale_multipart_uploads(self, older_than: datetime) -> int:
        """Abort S3 multipart uploads of blobs begun before `older_than` (crashed writers)."""
        if not self.is_s3:
            return 0
        client = self.s3_client()
        aborted = 0
        response = client.list_multipart_uploads(Bucket=self.storage.bucket_name, Prefix="bundles/")
        for upload in response.get("Uploads", []):
            if upload["Initiated"] < older_than:
                client.abort_multipart_upload(
                    Bucket=self.storage.bucket_name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
        return aborted
