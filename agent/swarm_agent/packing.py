"""Reproducible bundle packing and streaming sha256 of files.

`pack_directory()` turns a directory into a `.tar.gz` whose bytes depend only
on the tree's paths, contents, file types and executable bits: members are
sorted, every mtime is fixed, owners are uid/gid 0 with empty names, modes are
normalised (0644/0755 for files, 0755 for directories), no extended attributes
are recorded, and the gzip header carries neither a file name nor a
timestamp. The same tree therefore always gives the same sha256, whoever packs
it and whenever.

Every member is checked against the same safety rules the control plane
applies (`swarm_agent.bundle_safety`), so a bundle the server would refuse is
refused here first, with the same rule code.
"""
from __future__ import annotations

import fnmatch
import gzip
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from swarm_agent.bundle_safety import BundleRejected, check_member

#: Every member's mtime (1980-01-01, the earliest date ZIP and some tar readers accept).
FIXED_MTIME = 315532800
READ_CHUNK = 1024 * 1024
GZIP_LEVEL = 6


@dataclass(frozen=True)
class PackedBundle:
    """A packed bundle on disk: where it is, its digest, its size and how many members it has."""

    path: Path
    sha256: str
    size: int
    member_count: int


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, target):
        self._target = target
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self._target.write(data)

    def flush(self) -> None:
        self._target.flush()


def file_sha256(path: Path) -> tuple[str, int]:
    """The sha256 hex digest and size of a file, read in chunks (memory stays flat)."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def _is_excluded(relative: str, patterns: tuple[str, ...]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _walk_sorted(root: Path, patterns: tuple[str, ...]):
    """Yield (relative posix path, absolute path) of every entry under `root`, sorted, depth first.

    Sorting by name at every level (not by creation order or inode) is what
    makes two packs of the same tree identical.
    """
    def visit(directory: Path, prefix: str):
        with os.scandir(directory) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            relative = f"{prefix}{name}"
            if _is_excluded(relative, patterns):
                continue
            absolute = directory / name
            yield relative, absolute
            if absolute.is_dir() and not absolute.is_symlink():
                yield from visit(absolute, f"{relative}/")

    yield from visit(root, "")


def _normalised_member(relative: str, absolute: Path) -> tarfile.TarInfo:
    """A TarInfo that records only what matters to the bundle (type, size, exec bit, link target)."""
    status = absolute.lstat()
    info = tarfile.TarInfo(relative)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(status.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(absolute)
        info.mode = 0o777
    elif stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(status.st_mode):
        info.type = tarfile.REGTYPE
        info.size = status.st_size
        info.mode = 0o755 if status.st_mode & 0o111 else 0o644
    elif stat.S_ISFIFO(status.st_mode):
        info.type = tarfile.FIFOTYPE  # refused by check_member with its rule code
    elif stat.S_ISCHR(status.st_mode) or stat.S_ISBLK(status.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(status.st_mode) else tarfile.BLKTYPE
    else:
        raise BundleRejected("special_file", f"{relative!r} is a socket or another file type a bundle cannot hold")
    return info


def pack_directory(source: Path, destination: Path, *, exclude: tuple[str, ...] = ()) -> PackedBundle:
    """Pack `source` reproducibly into the `.tar.gz` file `destination`.

    Raises `BundleRejected` (with the server's rule code) for a member the
    control plane would refuse, and `ValueError` for an empty directory.
    """
    source = Path(source)
    if not source.is_dir():
        raise ValueError(f"{source} is not a directory")
    members = 0
    with open(destination, "wb") as raw:
        hashing = _HashingWriter(raw)
        # filename="" and mtime=0 keep the gzip header free of anything that varies.
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=GZIP_LEVEL) as compressed:
            with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
                for relative, absolute in _walk_sorted(source, tuple(exclude)):
                    info = _normalised_member(relative, absolute)
                    check_member(info)
                    if info.isreg():
                        with open(absolute, "rb") as handle:
                            archive.addfile(info, handle)
                    else:
                        archive.addfile(info)
                    members += 1
    if members == 0:
        Path(destination).unlink(missing_ok=True)
        raise ValueError(f"{source} is empty: a bundle needs at least one file")
    return PackedBundle(path=Path(destination), sha256=hashing.hasher.hexdigest(), size=hashing.size,
                        member_count=members)
