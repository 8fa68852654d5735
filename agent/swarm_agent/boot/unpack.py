"""Unpack a bundle safely into a fresh workdir, optionally verifying its hash in the same pass.

Every member goes through `bundle_safety.MemberBudget` (the same rules and
member/size limits as the server's upload check) before anything is
written, and extraction uses tarfile's `filter="data"` as a second guard.
When `expected_sha256` is given the file is hashed while it is read, so a
cache hit costs one read of the file; on a mismatch the workdir is emptied
and `HashMismatch` raised, so nothing from a corrupt file can run.
"""
from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from swarm_agent.boot.cache import HashMismatch
from swarm_agent.bundle_safety import TAR_STREAM_BUFFER_SIZE, BundleLimits, BundleRejected, InflatingReader, MemberBudget

READ_CHUNK_BYTES = 1024 * 1024
# tarfile's extraction filters arrived in 3.11.4 (PEP 706); Debian 12's 3.11.2 — the microVM
# guest's Python — lacks them. MemberBudget's checks come first either way; the filter is a second guard.
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERROR = getattr(tarfile, "FilterError", ())
COPY_BUFFER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UnpackResult:
    """What was unpacked, and how long it took."""

    members: int
    unpacked_bytes: int
    seconds: float
    sha256: str | None


class _HashingReader:
    """A read-only file wrapper that hashes every byte handed out, on a second thread.

    hashlib releases the GIL for large buffers, so hashing overlaps with
    decompression and writing: a cache hit costs about max(hash, unpack)
    instead of their sum.
    """

    def __init__(self, raw, queue_depth: int = 8):
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0
        self._chunks: queue.Queue = queue.Queue(maxsize=queue_depth)
        self._thread = threading.Thread(target=self._hash, name="bundle-hasher", daemon=True)
        self._thread.start()
        self._finished = False

    def _hash(self) -> None:
        while True:
            chunk = self._chunks.get()
            if chunk is None:
                return
            self._digest.update(chunk)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self._chunks.put(data)
            self.size += len(data)
        return data

    def hexdigest(self) -> str:
        """Hash whatever the tar reader left unread (end-of-archive padding), then the digest."""
        if not self._finished:
            while self.read(READ_CHUNK_BYTES):
                pass
            self._chunks.put(None)
            self._thread.join()
            self._finished = True
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop the hashing thread (after an error)."""
        if not self._finished:
            self._chunks.put(None)
            self._thread.join()
            self._finished = True


def empty_directory(workdir: Path) -> None:
    """Make `workdir` an empty directory (it may be a mount point, so it is never replaced)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for child in workdir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _raise_if_corrupt(reader, expected_sha256: str | None, error: BaseException) -> None:
    """HashMismatch when the file being unpacked is not the bytes `expected_sha256` names (hashing the rest)."""
    if expected_sha256:
        actual = reader.hexdigest()
        if actual != expected_sha256:
            raise HashMismatch(expected_sha256, actual, reader.size) from error


def unpack_bundle(path: Path, workdir: Path, *, limits: BundleLimits,
                  expected_sha256: str | None = None) -> UnpackResult:
    """Unpack the bundle at `path` into an emptied `workdir` (raises BundleRejected / HashMismatch)."""
    started = time.monotonic()
    empty_directory(workdir)
    budget = MemberBudget(limits)
    reader = None
    try:
        with open(path, "rb", buffering=0) as raw:
            reader = _HashingReader(raw) if expected_sha256 else raw
            try:
                # Inflated in bounded, ratio-checked steps (tarfile's own "r|gz" reader is quadratic).
                inflated = InflatingReader(reader, limits, chunk_size=READ_CHUNK_BYTES)
                with tarfile.open(fileobj=inflated, mode="r|", bufsize=TAR_STREAM_BUFFER_SIZE,
                                  copybufsize=COPY_BUFFER_BYTES) as archive:
                    for member in archive:
                        budget.admit(member)
                        archive.extract(member, path=workdir, set_attrs=True, **_DATA_FILTER)
            except _FILTER_ERROR as exc:
                _raise_if_corrupt(reader, expected_sha256, exc)
                raise BundleRejected("unsafe_member", f"refused by the data filter: {exc}") from exc
            except BundleRejected as exc:
                # A corrupt cached file usually fails a rule first (its gzip stream is broken): a file that
                # is not the bytes asked for is a hash mismatch (the cache fetches it again), not a refusal.
                _raise_if_corrupt(reader, expected_sha256, exc)
                raise
            except (tarfile.TarError, EOFError, ValueError, OSError) as exc:
                _raise_if_corrupt(reader, expected_sha256, exc)
                raise BundleRejected("not_a_tar_gz", f"not a valid gzip-compressed tar archive: {exc}") from exc
            digest = None
            if expected_sha256:
                digest = reader.hexdigest()
                if digest != expected_sha256:
                    raise HashMismatch(expected_sha256, digest, reader.size)
    except BaseException:
        if isinstance(reader, _HashingReader):
            reader.close()
        empty_directory(workdir)
        raise
    if budget.members == 0:
        raise BundleRejected("empty_bundle", "the bundle contains no files")
    return UnpackResult(members=budget.members, unpacked_bytes=budget.unpacked, seconds=time.monotonic() - started,
                        sha256=digest)


def limits_from_environment() -> BundleLimits:
    """Unpack limits: SWARM_BUNDLE_MAX_MEMBERS / _MAX_UNPACKED_BYTES / _MAX_RATIO / _RATIO_FLOOR_BYTES, else the defaults."""
    defaults = BundleLimits()
    return BundleLimits(
        max_members=int(os.environ.get("SWARM_BUNDLE_MAX_MEMBERS") or defaults.max_members),
        max_unpacked_bytes=int(os.environ.get("SWARM_BUNDLE_MAX_UNPACKED_BYTES") or defaults.max_unpacked_bytes),
        max_ratio=int(os.environ.get("SWARM_BUNDLE_MAX_RATIO") or defaults.max_ratio),
        ratio_floor_bytes=int(os.environ.get("SWARM_BUNDLE_RATIO_FLOOR_BYTES") or defaults.ratio_floor_bytes),
    )
