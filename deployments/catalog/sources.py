"""Reading a catalog tree — from a directory, a `.tar.gz` stream or files in memory — into hashed files.

A catalog tree holds `scenarios/<name>/.vrooli/service.json`, `resources/<name>/.vrooli/service.json`
and `resources/<name>/resource.json`; every other file is ignored (counted, not read). A
tarball is checked with the bundle store's rules (`swarm_agent.bundle_safety`: no absolute
paths, `..`, escaping links, devices, fifos, setuid bits, and the member / unpacked-size
limits); a member that breaks one refuses the whole import, since nothing else in such an
archive can be trusted. One top-level folder around the tree (as `git archive --prefix` and
GitHub tarballs have) is stripped.

The tree's identity is the sha256 of its catalog files listed as `sha256sum` prints them
(`<sha256>  <path>\\n`, sorted by path): the same files at the same paths are the same
snapshot, whatever the archive's member order, timestamps, owners or compression.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from swarm_agent.bundle_safety import TAR_STREAM_BUFFER_SIZE, BundleLimits, BundleRejected, InflatingReader, MemberBudget

from deployments.catalog.problems import Problem
from deployments.errors import CatalogRefused

_NAME = r"[a-z0-9][a-z0-9._-]{0,99}"
_PATTERNS = (
    (re.compile(rf"scenarios/({_NAME})/\.vrooli/service\.json"), "scenario", "service.json"),
    (re.compile(rf"resources/({_NAME})/\.vrooli/service\.json"), "resource", "service.json"),
    (re.compile(rf"resources/({_NAME})/resource\.json"), "resource", "resource.json"),
)
_CATALOG_ROOTS = frozenset({"scenarios", "resources"})
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class CatalogLimits:
    """How much a catalog import may read. The archive limits are the bundle store's."""

    max_file_bytes: int = 1024 * 1024
    max_files: int = 20_000
    max_members: int = 20_000
    max_unpacked_bytes: int = 8 * 1024**3


def catalog_limits() -> CatalogLimits:
    """The configured limits (SWARM_CATALOG_MAX_FILE_BYTES and the bundle store's tar-bomb limits)."""
    from django.conf import settings

    return CatalogLimits(
        max_file_bytes=settings.SWARM_CATALOG_MAX_FILE_BYTES,
        max_files=settings.SWARM_BUNDLE_MAX_MEMBERS,
        max_members=settings.SWARM_BUNDLE_MAX_MEMBERS,
        max_unpacked_bytes=settings.SWARM_BUNDLE_MAX_UNPACKED_BYTES,
    )


@dataclass(frozen=True)
class CatalogFile:
    """One catalog file: where, what it declares, its digest, and its bytes unless it was refused.

    `data` is None when the file could not be read as a catalog file (`refusal` says why: too
    large, not a regular file); it still counts in the tree's hash.
    """

    path: str
    kind: str
    name: str
    format: str
    sha256: str
    size: int
    data: bytes | None
    refusal: Problem | None = None


@dataclass(frozen=True)
class CatalogTree:
    """The catalog files of a tree, sorted by path, and the tree's content hash."""

    files: tuple[CatalogFile, ...]
    sha256: str
    ignored_files: int


def match_catalog_path(path: str) -> tuple[str, str, str] | None:
    """`(kind, name, format)` when `path` (relative, `/`-separated) is a catalog file, else None."""
    for pattern, kind, file_format in _PATTERNS:
        match = pattern.fullmatch(path)
        if match:
            return kind, match.group(1), file_format
    return None


def tree_hash(files) -> str:
    """The sha256 of the `sha256sum`-style listing of `files` (each with `path` and `sha256`)."""
    listing = "".join(f"{file.sha256}  {file.path}\n" for file in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _too_large(path: str, size: int, limits: CatalogLimits) -> Problem:
    return Problem(path, "", f"the file is {size} bytes; a catalog file may have at most {limits.max_file_bytes}",
                   code="too_large")


def _finish(candidates: list[CatalogFile], ignored: int, limits: CatalogLimits) -> CatalogTree:
    if not candidates:
        raise CatalogRefused(
            "The tree holds no catalog file (scenarios/<name>/.vrooli/service.json, "
            "resources/<name>/.vrooli/service.json or resources/<name>/resource.json).", code="empty_catalog")
    if len(candidates) > limits.max_files:
        raise CatalogRefused(f"The tree holds {len(candidates)} catalog files; at most {limits.max_files} are read.",
                             code="too_many_files")
    files = tuple(sorted(candidates, key=lambda file: file.path))
    return CatalogTree(files=files, sha256=tree_hash(files), ignored_files=ignored)


def tree_from_files(files: dict[str, bytes], *, limits: CatalogLimits | None = None) -> CatalogTree:
    """A tree from `{relative path: bytes}` (tests, generated catalogs); other paths are ignored."""
    limits = limits or CatalogLimits()
    candidates, ignored = [], 0
    for path, data in files.items():
        match = match_catalog_path(posixpath.normpath(path))
        if match is None:
            ignored += 1
            continue
        digest = hashlib.sha256(data).hexdigest()
        refusal = _too_large(path, len(data), limits) if len(data) > limits.max_file_bytes else None
        candidates.append(CatalogFile(posixpath.normpath(path), *match, sha256=digest, size=len(data),
                                      data=None if refusal else data, refusal=refusal))
    return _finish(candidates, ignored, limits)


def _read_limited(stream, path: str, limits: CatalogLimits) -> tuple[str, int, bytes | None, Problem | None]:
    """Hash the whole stream; keep its bytes only while they stay within the per-file limit."""
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
        if size <= limits.max_file_bytes:
            kept += chunk
    if size > limits.max_file_bytes:
        return digest.hexdigest(), size, None, _too_large(path, size, limits)
    return digest.hexdigest(), size, bytes(kept), None


def read_directory(root: str | os.PathLike, *, limits: CatalogLimits | None = None) -> CatalogTree:
    """The catalog files under `root` (a checkout or an unpacked tree). Symlinks are never followed."""
    limits = limits or CatalogLimits()
    root = Path(root)
    candidates: list[CatalogFile] = []
    for top in sorted(_CATALOG_ROOTS):
        base = root / top
        if not base.is_dir() or base.is_symlink():
            continue
        for child in sorted(os.scandir(base), key=lambda item: item.name):
            if not child.is_dir(follow_symlinks=False):
                continue
            for relative in (f"{top}/{child.name}/.vrooli/service.json", f"{top}/{child.name}/resource.json"):
                match = match_catalog_path(relative)
                if match is None:
                    continue
                candidate = _read_directory_file(root, relative, match, limits)
                if candidate is not None:
                    candidates.append(candidate)
    return _finish(candidates, 0, limits)


def _read_directory_file(root: Path, relative: str, match, limits: CatalogLimits) -> CatalogFile | None:
    path = root / relative
    try:
        info = path.lstat()
        parent = path.parent.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(parent.st_mode) or not stat.S_ISREG(info.st_mode):
        # A link could point anywhere on the importing machine; its target is never read.
        problem = Problem(relative, "", "not a regular file (a symlink or a special file); it is not read",
                          code="not_a_file")
        return CatalogFile(relative, *match, sha256=hashlib.sha256(b"").hexdigest(), size=0, data=None,
                           refusal=problem)
    with open(path, "rb") as handle:
        digest, size, data, refusal = _read_limited(handle, relative, limits)
    return CatalogFile(relative, *match, sha256=digest, size=size, data=data, refusal=refusal)


def read_tarball(fileobj, *, limits: CatalogLimits | None = None) -> CatalogTree:
    """The catalog files of a `.tar.gz` stream, read once, front to back, checked member by member."""
    limits = limits or CatalogLimits()
    budget = MemberBudget(BundleLimits(max_members=limits.max_members, max_unpacked_bytes=limits.max_unpacked_bytes))
    seen_roots: set[str] = set()
    # Until the archive ends it is unknown whether one top folder wraps the tree, so files that
    # match either reading are kept (both are bounded by the per-file limit).
    candidates: dict[str, CatalogFile] = {}
    file_members = 0
    try:
        with tarfile.open(fileobj=InflatingReader(fileobj, budget.limits), mode="r|",
                          bufsize=TAR_STREAM_BUFFER_SIZE) as archive:
            for member in archive:
                budget.admit(member)
                path = posixpath.normpath(member.name)
                if path == ".":
                    continue
                seen_roots.add(path.split("/", 1)[0])
                file_members += member.isfile()
                stripped = path.split("/", 1)[1] if "/" in path else ""
                if not (match_catalog_path(path) or match_catalog_path(stripped)):
                    continue
                if len(candidates) > 2 * limits.max_files:
                    raise CatalogRefused(f"The archive holds more than {limits.max_files} catalog files.",
                                         code="too_many_files")
                if member.isfile():
                    digest, size, data, refusal = _read_limited(archive.extractfile(member), path, limits)
                else:
                    data, size, digest = None, 0, hashlib.sha256(b"").hexdigest()
                    refusal = Problem(path, "", "not a regular file (a link or a directory); it is not read",
                                      code="not_a_file")
                candidates[path] = CatalogFile(path, "", "", "", sha256=digest, size=size, data=data, refusal=refusal)
    except BundleRejected as rejected:
        raise CatalogRefused(f"The archive is refused: {rejected.detail}.", code=rejected.code) from None
    except CatalogRefused:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise CatalogRefused(f"Not a gzip-compressed tar archive: {error}.", code="not_a_tar_gz") from None
    strip = not (seen_roots & _CATALOG_ROOTS) and len(seen_roots) == 1
    chosen = []
    for path, candidate in candidates.items():
        relative = path.split("/", 1)[1] if strip and "/" in path else path
        match = match_catalog_path(relative) if (strip or relative == path) else None
        if match is None or (strip and "/" not in path):
            continue
        refusal = candidate.refusal
        if refusal is not None:
            refusal = Problem(relative, refusal.pointer, refusal.message.replace(path, relative), refusal.code)
        chosen.append(CatalogFile(relative, *match, sha256=candidate.sha256, size=candidate.size,
                                  data=candidate.data, refusal=refusal))
    return _finish(chosen, max(file_members - len(chosen), 0), limits)
