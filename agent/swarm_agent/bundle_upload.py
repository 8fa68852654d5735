"""Streaming bundle uploads to the control plane.

The tarball is never read into memory: the request body is produced chunk by
chunk from the file, with an exact `Content-Length` computed up front, so
uploading 1 GiB costs the client a few MiB. The digest is declared (query
string and form field) so the server can stream straight to the blob's final
S3 key and refuse the upload if the bytes do not match.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from swarm_agent.client import raise_for_api_error

UPLOAD_CHUNK = 1024 * 1024

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class BundlePush:
    """What to register: the tarball, its digest and the target workflow version."""

    path: Path
    sha256: str
    size: int
    tenant: str
    workflow: str
    version: str
    metadata: dict | None = None
    activate: bool | None = None
    runtime: str | None = None
    entrypoint: str | None = None
    create_tenant: bool = False

    def form_fields(self) -> dict[str, str]:
        """The multipart form fields sent before the file part."""
        fields = {"tenant": self.tenant, "workflow": self.workflow, "version": self.version, "sha256": self.sha256}
        if self.metadata is not None:
            fields["metadata"] = json.dumps(self.metadata, sort_keys=True)
        if self.activate is not None:
            fields["activate"] = "true" if self.activate else "false"
        if self.runtime:
            fields["runtime"] = self.runtime
        if self.entrypoint:
            fields["entrypoint"] = self.entrypoint
        if self.create_tenant:
            fields["create_tenant"] = "true"
        return fields


def _iter_file(path: Path, on_progress: ProgressCallback | None) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            if on_progress is not None:
                on_progress(len(chunk))
            yield chunk


class MultipartFileBody:
    """A `multipart/form-data` body of text fields plus one file, streamed from disk.

    Its length is known before the first byte is sent (`content_length`), so
    the request carries a real Content-Length instead of chunked encoding.
    """

    def __init__(self, fields: dict[str, str], *, file_field: str, file_path: Path, file_size: int,
                 file_name: str = "bundle.tar.gz", content_type: str = "application/gzip"):
        self.boundary = f"swarm-{secrets.token_hex(16)}"
        parts = []
        for name, value in fields.items():
            parts.append(
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                + value.encode() + b"\r\n"
            )
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
            f'filename="{file_name}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        )
        self.head = b"".join(parts)
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.file_path = file_path
        self.file_size = file_size

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return len(self.head) + self.file_size + len(self.tail)

    def iter_bytes(self, on_progress: ProgressCallback | None = None) -> Iterator[bytes]:
        """The body, chunk by chunk; `on_progress(n)` is told about every file chunk sent."""
        yield self.head
        yield from _iter_file(self.file_path, on_progress)
        yield self.tail


def push_bundle(client: httpx.Client, push: BundlePush, *, on_progress: ProgressCallback | None = None,
                raw: bool = True) -> tuple[int, dict]:
    """Upload a bundle and register its version; returns (HTTP status, version JSON).

    `raw=True` uses `PUT /bundles/<sha256>` (the body is the tarball itself,
    which the server streams without multipart parsing); `raw=False` uses the
    multipart `POST /bundles`. Both register the version the same way.
    Raises `ApiError` when the server refuses.
    """
    # Refuse a bad or revoked token before sending what may be a GiB (the answer to a
    # refused upload can only come after the server has drained or dropped the body).
    # HEAD answers 404 for a bundle not stored yet, the usual case, which the server does not log as a fault.
    preflight = client.head(f"/bundles/{push.sha256}")
    if preflight.status_code in (401, 403):
        raise_for_api_error(client.get(f"/bundles/{push.sha256}"))  # HEAD has no body to name the refusal
    if raw:
        params = {key: value for key, value in push.form_fields().items() if key != "sha256"}
        response = client.put(
            f"/bundles/{push.sha256}", params=params,
            content=_iter_file(push.path, on_progress),
            headers={"Content-Type": "application/gzip", "Content-Length": str(push.size)},
        )
    else:
        body = MultipartFileBody(push.form_fields(), file_field="bundle", file_path=push.path, file_size=push.size)
        response = client.post(
            "/bundles", params={"sha256": push.sha256},
            content=body.iter_bytes(on_progress),
            headers={"Content-Type": body.content_type, "Content-Length": str(body.content_length)},
        )
    raise_for_api_error(response)
    return response.status_code, response.json()
