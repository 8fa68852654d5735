"""A release directory's content manifest, and checking that the installed tree still matches it.

After unpacking, the agent records every member (path, kind, mode, size and
sha256 or link target) in `<releases>/<sha256>.tree.json`. A heartbeat
reports the bundle's sha256 for a type only while its `current` tree still
matches that record; anything else (a file edited, added or removed) is
reported as the digest of what is actually there, which is what the control
plane flags as drift. A cheap stat signature avoids re-hashing an unchanged
tree on every heartbeat.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

READ_BYTES = 1024 * 1024


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _walk(root: Path):
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in sorted(subdirectories + files):
            path = Path(directory) / name
            yield path, path.relative_to(root).as_posix(), os.lstat(path)


def tree_manifest(root: Path) -> list[list]:
    """Every member under `root`: [path, kind, mode, size, sha256 | link target | ""], sorted by path."""
    entries = []
    for path, relative, info in _walk(root):
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            entries.append([relative, "link", mode, 0, os.readlink(path)])
        elif stat.S_ISDIR(info.st_mode):
            entries.append([relative, "dir", mode, 0, ""])
        else:
            entries.append([relative, "file", mode, info.st_size, _file_sha256(path)])
    return sorted(entries)


def tree_digest(entries: list[list]) -> str:
    """The sha256 of a manifest's canonical JSON."""
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()


def stat_signature(root: Path) -> str:
    """A digest of (path, mode, size, mtime) of every member: changes when anything plausibly changed."""
    digest = hashlib.sha256()
    for _, relative, info in _walk(root):
        digest.update(f"{relative}\0{info.st_mode}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def manifest_path(releases: Path, sha256: str) -> Path:
    return releases / f"{sha256}.tree.json"


def record_tree(releases: Path, sha256: str) -> str:
    """Write the manifest of `releases/<sha256>` beside it; returns its digest."""
    entries = tree_manifest(releases / sha256)
    digest = tree_digest(entries)
    temporary = releases / f".{sha256}.tree.json.tmp"
    temporary.write_text(json.dumps({"digest": digest, "entries": entries}))
    os.replace(temporary, manifest_path(releases, sha256))
    return digest


def recorded_digest(releases: Path, sha256: str) -> str | None:
    try:
        return json.loads(manifest_path(releases, sha256).read_text())["digest"]
    except (OSError, ValueError, KeyError):
        return None


class TreeVerifier:
    """Answers "which hash does this type report?" for heartbeats, re-hashing only after a change."""

    def __init__(self):
        self._verified: dict[Path, tuple[str, str]] = {}  # release dir → (stat signature, reported hash)

    def reported_hash(self, releases: Path, sha256: str) -> str:
        """`sha256` when `releases/<sha256>` matches its recorded manifest, else the digest of what is there."""
        root = releases / sha256
        try:
            signature = stat_signature(root)
        except OSError:
            return hashlib.sha256(b"missing:" + sha256.encode()).hexdigest()
        cached = self._verified.get(root)
        if cached is not None and cached[0] == signature:
            return cached[1]
        actual = tree_digest(tree_manifest(root))
        reported = sha256 if actual == recorded_digest(releases, sha256) else actual
        self._verified[root] = (signature, reported)
        return reported

    def forget(self, root: Path) -> None:
        self._verified.pop(root, None)
