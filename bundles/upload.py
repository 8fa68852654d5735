"""A Django upload handler that hashes, inspects and stores a bundle as it is parsed.

Each chunk of the `bundle` file field goes to three consumers at once: the
sha256 hasher, the tar safety inspector (on its own thread) and a blob writer
(a spool file, or a multipart upload straight to S3). Nothing holds the whole
file in memory, so memory use does not grow with bundle size.
"""
from __future__ import annotations

import hashlib

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from swarm_agent.bundle_safety import BundleInspector, BundleLimits

from bundles.blobstore import BlobStore, BlobWriter
from bundles.keys import blob_key, is_sha256_hex
from swarm.core.errors import ApiError, PayloadTooLarge

BUNDLE_FIELD = "bundle"


class ReceivedBundle(UploadedFile):
    """A fully received bundle: its digest, size, inspector and uncommitted writer."""

    def __init__(self, *, name: str, sha256: str, size: int, inspector: BundleInspector, writer: BlobWriter):
        super().__init__(file=None, name=name, content_type="application/gzip", size=size)
        self.sha256 = sha256
        self.inspector = inspector
        self.writer = writer

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
        self._inspector: BundleInspector | None = None
        self._writer: BlobWriter | None = None
        self._size = 0

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        if field_name != BUNDLE_FIELD:
            raise SkipFile()
        if self._writer is not None or self.received is not None:
            raise ApiError("Send exactly one bundle file.", code="multiple_bundles", field=BUNDLE_FIELD)
        known_key = blob_key(self.declared_sha256) if self.declared_sha256 else None
        self._hasher = hashlib.sha256()
        self._inspector = BundleInspector(self.limits)
        self._writer = self.store.writer(known_key=known_key)

    def receive_data_chunk(self, raw_data, start):
        self._size += len(raw_data)
        if self._size > self.max_bytes:
            self.discard()
            raise PayloadTooLarge(
                f"The bundle is larger than the upload limit of {self.max_bytes} bytes.", field=BUNDLE_FIELD
            )
        self._hasher.update(raw_data)
        self._inspector.feed(raw_data)
        self._writer.write(raw_data)
        return None

    def file_complete(self, file_size):
        self.received = ReceivedBundle(
            name=self.file_name or "bundle.tar.gz",
            sha256=self._hasher.hexdigest(),
            size=self._size,
            inspector=self._inspector,
            writer=self._writer,
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
