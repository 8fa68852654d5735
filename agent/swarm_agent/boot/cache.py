"""The local bundle cache: `<cache>/bundles/<sha256>.tar.gz`, verified, locked, size-budgeted.

* A miss downloads into a temp file in the same directory, hashed while it
  is written and compared with the *requested* hash, then renamed into place
  (so a half-written or tampered file is never visible under the final name).
* One file lock per hash: N concurrent boots of one bundle download it once;
  the others wait and then find it cached.
* Entries are stamped (mtime) on every use; after an insert the least
  recently used entries are removed until the cache fits its budget.
* A cached entry whose bytes do not hash to its name is corrupt: the caller
  discards it (`discard_if_unchanged`) and fetches again.
* Read-only shared directories (a microVM sees its host's cache over 9p) are
  looked in after this cache misses: a hit there is used where it lies, and
  verified like any other hit; a corrupt one is skipped from then on (it
  cannot be deleted from here) and the bundle fetched into this cache.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from swarm_agent.boot.fetch import FetchResult, fetch_to_file

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
LOCK_TIMEOUT_SECONDS = 3600
STALE_PART_SECONDS = 24 * 3600


class HashMismatch(Exception):
    """Downloaded bytes do not hash to the requested digest."""

    def __init__(self, expected: str, actual: str, size: int):
        super().__init__(f"bundle hash mismatch: expected sha256 {expected}, got {actual} ({size} bytes)")
        self.expected = expected
        self.actual = actual
        self.size = size


@dataclass(frozen=True)
class CacheEntry:
    """A bundle file in the cache, and whether this boot downloaded it."""

    path: Path
    hit: bool
    fetched: FetchResult | None = None
    identity: tuple[int, int] | None = None


class BundleCache:
    """Content-addressed bundle files under `<root>/bundles`, with a size budget in bytes."""

    def __init__(self, root: str | os.PathLike, budget_bytes: int | None = None,
                 shared_directories: list[str | os.PathLike] = ()):
        self.root = Path(root)
        self.directory = self.root / "bundles"
        self.budget_bytes = budget_bytes
        self.shared_directories = [Path(directory) for directory in shared_directories]
        self._distrusted: set[Path] = set()
        self.directory.mkdir(parents=True, exist_ok=True)

    def _shared_entry(self, sha256: str) -> CacheEntry | None:
        """A hit in a read-only shared directory (not yet found corrupt), or None."""
        for directory in self.shared_directories:
            path = directory / f"{sha256}.tar.gz"
            if path in self._distrusted:
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            return CacheEntry(path=path, hit=True, identity=(stat.st_dev, stat.st_ino))
        return None

    def has(self, sha256: str) -> bool:
        """Whether the bundle is here or in a shared directory (unverified)."""
        return self.path_for(sha256).exists() or self._shared_entry(sha256) is not None

    def path_for(self, sha256: str) -> Path:
        """Where the bundle with this digest lives in the cache."""
        if not SHA256_PATTERN.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.directory / f"{sha256}.tar.gz"

    def _lock(self, sha256: str) -> FileLock:
        return FileLock(str(self.directory / f"{sha256}.lock"), timeout=LOCK_TIMEOUT_SECONDS)

    def obtain(self, sha256: str, url: str, *, fetch_timeout: float = 60.0) -> CacheEntry:
        """The cached file for `sha256`, downloading it from `url` when absent (once across processes)."""
        path = self.path_for(sha256)
        with self._lock(sha256):
            try:
                stat = path.stat()
            except FileNotFoundError:
                stat = None
            if stat is not None:
                os.utime(path)  # least-recently-used stamp
                return CacheEntry(path=path, hit=True, identity=(stat.st_dev, stat.st_ino))
            shared = self._shared_entry(sha256)
            if shared is not None:
                return shared
            fetched = self._download(sha256, url, path, fetch_timeout)
        self.evict(keep=path)
        return CacheEntry(path=path, hit=False, fetched=fetched)

    def _download(self, sha256: str, url: str, path: Path, timeout: float) -> FetchResult:
        part = self.directory / f".{sha256}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
        try:
            with open(part, "wb") as destination:
                fetched = fetch_to_file(url, destination, timeout=timeout)
            if fetched.sha256 != sha256:
                raise HashMismatch(sha256, fetched.sha256, fetched.size)
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        return fetched

    def discard_if_unchanged(self, sha256: str, identity: tuple[int, int] | None) -> None:
        """Remove a corrupt entry — unless another boot already replaced it with a fresh file.

        A corrupt entry of a shared (read-only) directory is only skipped from now on.
        """
        shared = self._shared_entry(sha256)
        if shared is not None and (identity is None or shared.identity == identity):
            self._distrusted.add(shared.path)
            return
        path = self.path_for(sha256)
        with self._lock(sha256):
            try:
                stat = path.stat()
            except FileNotFoundError:
                return
            if identity is None or (stat.st_dev, stat.st_ino) == identity:
                path.unlink(missing_ok=True)

    def entries(self) -> list[Path]:
        """Cached bundle files, least recently used first."""
        files = []
        for path in self.directory.glob("*.tar.gz"):
            try:
                files.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                continue
        return [path for _, path in sorted(files)]

    def size(self) -> int:
        """Bytes held by cached bundles."""
        total = 0
        for path in self.entries():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def evict(self, *, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the cache fits its budget; returns what went."""
        removed = []
        with FileLock(str(self.directory / ".evict.lock"), timeout=LOCK_TIMEOUT_SECONDS):
            now = time.time()
            for part in self.directory.glob(".*.part"):
                try:
                    if now - part.stat().st_mtime > STALE_PART_SECONDS:
                        part.unlink()
                except FileNotFoundError:
                    pass
            if self.budget_bytes is None:
                return removed
            total = self.size()
            for path in self.entries():
                if total <= self.budget_bytes:
                    break
                if keep is not None and path == keep:
                    continue
                try:
                    size = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                total -= size
                removed.append(path)
        return removed
