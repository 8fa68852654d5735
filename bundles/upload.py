"""A Django upload handler that hashes, inspects and stores a bundle as it is parsed.

Each chunk of the `bundle` file field goes to three consumers at once: the
sha256 hasher, the tar safety inspector (on the inspection pool, see
bundles/inspection.py) and a blob writer (a spool file, or a multipart upload
straight to S3). Nothing holds the whole file in memory, so memory use does
not grow with bundle size. The first broken safety rule stops the upload at
once (the rest of the body is not stored), and a client that has gone away
by the time the bundle is checked gets nothing registered
(`ReceivedBundle.client_gone`, set by swarm/core/streaming_asgi.py).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from swarm_agent.bundle_safety import BundleLimits, BundleRejected

from bundles.blobstore import BlobStore, BlobWriter
from bundles.inspection import PooledInspector
from bundles.keys import blob_key, is_sha256_hex
from swarm.core.errors import ApiError, PayloadTooLarge
from swarm.core.streaming_asgi import CLIENT_GONE_META_KEY

BUNDLE_FIELD = "bundle"


def _never() -> bool:
    return False


class ReceivedBundle(UploadedFile):
    """A fully received bundle: its digest, size, inspector and uncommitted writer."""

    def __init__(self, *, name: str, sha256: str, size: int, inspector: PooledInspector, writer: BlobWriter,
                 client_gone: Callable[[], bool] = _never):
        super().__init__(file=None, name=name, content_type="application/gzip", size=size)
        self.sha256 = sha256
        self.inspector = inspector
        self.writer = writer
        self.client_gone = client_gone

    def discard(self) -> None:
        """Drop the received bytes: nothing of this upload is kept."""
        self.inspector.abandon()
        self.writer.abort()

    def close(self) -> None:
        """Nothing to close: the bytes live in the writer, which the handler or the service owns.

        (Django closes every uploaded file after a failed parse and at the end
        of the request; `discard()` is the explicit way to drop an upload.)
        """


class BundleUploadHandler(FileUploadHandler):
    """Streams the `bundle` field; any other file field is skipped."""

    chunk_size = 1024 * 1024

    def __init__(self, request, *, store: BlobStore, limits: BundleLimits, max_bytes: int,
                 declared_sha256: str | None):
        super().__init__(request)
        self.store = store
        self.limits = limits
        self.max_bytes = max_bytes
        self.declared_sha256 = declared_sha256 if is_sha256_hex(declared_sha256 or "") else None
        self.received: ReceivedBundle | None = None
        self._hasher = None
        self._inspector: PooledInspector | None = None
        self._writer: BlobWriter | None = None
        self._size = 0
        #: Called once per chunk (the view sets it to its inspection slot's lease refresh).
        self.keep_alive: Callable[[], None] = lambda: None
        client_gone = request.META.get(CLIENT_GONE_META_KEY)
        self.client_gone: Callable[[], bool] = client_gone.is_set if client_gone is not None else _never

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        if field_name != BUNDLE_FIELD:
            raise SkipFile()
        if self._writer is not None or self.received is not None:
            raise ApiError("Send exactly one bundle file.", code="multiple_bundles", field=BUNDLE_FIELD)
        known_key = blob_key(self.declared_sha256) if self.declared_sha256 else None
        self._hasher = hashlib.sha256()
        self._inspector = PooledInspector(self.limits)
        self._writer = self.store.writer(known_key=known_key)

    def receive_data_chunk(self, raw_data, start):
        self._size += len(raw_data)
        if self._size > self.max_bytes:
            self.discard()
            raise PayloadTooLarge(
                f"The bundle is larger than the upload limit of {self.max_bytes} bytes.", field=BUNDLE_FIELD
            )
        self._hasher.update(raw_data)
        try:
            self._inspector.feed(raw_data)
        except BundleRejected as rejected:
            self.discard()
            raise ApiError(rejected.detail, code=rejected.code, field=BUNDLE_FIELD,
                           status_code=rejected.status) from None
        self._writer.write(raw_data)
        self.keep_alive()
        return None

    def file_complete(self, file_size):
        self.received = ReceivedBundle(
            name=self.file_name or "bundle.tar.gz",
            sha256=self._hasher.hexdigest(),
            size=self._size,
            inspector=self._inspector,
            writer=self._writer,
            client_gone=self.client_gone,
        )
        self._inspector = self._writer = None
        return self.received

    def receive_stream(self, stream, *, content_length: int) -> ReceivedBundle:
        """Take a raw request body that is the tarball itself (no multipart framing).

        The bytes go through exactly the path multipart uploads take
        (`new_file` → `receive_data_chunk` → `file_complete`), so hashing,
        inspection, size limits and storage behave the same.
        """
        self.new_file(BUNDLE_FIELD, "bundle.tar.gz", "application/gzip", content_length)
        received = 0
        while received < content_length:
            try:
                chunk = stream.read(min(self.chunk_size, content_length - received))
            except OSError:  # the client went away mid-body (Django raises UnreadablePostError)
                chunk = b""
            if not chunk:
                break
            self.receive_data_chunk(chunk, received)
            received += len(chunk)
        if received != content_length:
            self.discard()
            raise ApiError(
                f"The body ended after {received} of the {content_length} bytes announced by Content-Length.",
                code="incomplete_body", field=BUNDLE_FIELD,
            )
        return self.file_complete(received)

    def upload_interrupted(self):
        self.discard()

    def discard(self) -> None:
        """Abort whatever this handler started (used on any failure)."""
        if self._inspector is not None:
            self._inspector.abandon()
            self._inspector = None
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        if self.received is not None:
            self.received.discard()
            self.received = None


def bundle_receive_file(path, *, store: BlobStore, limits: BundleLimits, max_bytes: int) -> ReceivedBundle:
    """Take a tarball the server made itself (a package run's) through exactly the path an upload takes."""
    from types import SimpleNamespace
    from pathlib import Path

    size = Path(path).stat().st_size
    handler = BundleUploadHandler(SimpleNamespace(META={}), store=store, limits=limits, max_bytes=max_bytes,
                                  declared_sha256=None)
    with open(path, "rb") as stream:
        return handler.receive_stream(stream, content_length=size)
