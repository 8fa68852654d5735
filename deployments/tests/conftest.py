"""Helpers of the deployment manager's tests: the sample catalog, small hand-made catalogs, tarballs."""
from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from deployments.catalog import parse_tree, tree_from_files
from deployments.lookup import MemoryLookup

SAMPLE_CATALOG = Path(__file__).resolve().parent / "catalog"


@pytest.fixture(autouse=True)
def _private_cache_namespace(settings):
    """Each test reads and writes analyses under its own cache prefix (Redis is never flushed)."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-deploy-{uuid.uuid4().hex[:10]}"}}
    settings.SWARM_ANALYSIS_CACHE_SECONDS = 120


def sample_files() -> dict[str, bytes]:
    """The sample catalog's files by relative path."""
    return {str(path.relative_to(SAMPLE_CATALOG)): path.read_bytes()
            for path in sorted(SAMPLE_CATALOG.rglob("*")) if path.is_file()}


def scenario_file(name: str, *, resources: dict | None = None, scenarios: dict | None = None, version: str = "1.0.0",
                  **fields) -> tuple[str, bytes]:
    """`(path, bytes)` of a minimal scenario service.json."""
    document = {"service": {"name": name, "version": version, "type": "scenario"},
                "dependencies": {"resources": resources or {}, "scenarios": scenarios or {}}, **fields}
    return f"scenarios/{name}/.vrooli/service.json", json.dumps(document).encode()


def resource_file(name: str, **fields) -> tuple[str, bytes]:
    """`(path, bytes)` of a minimal resource.json."""
    return f"resources/{name}/resource.json", json.dumps({"name": name, **fields}).encode()


def catalog(*files: tuple[str, bytes]) -> dict[str, bytes]:
    """A catalog's files from `(path, bytes)` pairs."""
    return dict(files)


def lookup_of(files: dict[str, bytes]) -> MemoryLookup:
    """A memory lookup over the parsed files (problems are not checked here)."""
    tree = tree_from_files(files)
    entries, _problems = parse_tree(tree)
    return MemoryLookup(entries, snapshot_sha256=tree.sha256)


def tarball(files: dict[str, bytes], *, prefix: str = "", members: list[tarfile.TarInfo] | None = None,
            mtime: int = 0, reverse: bool = False) -> bytes:
    """A `.tar.gz` of `files` (under `prefix/`), with extra raw `members` (hostile ones) appended."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in sorted(files.items(), reverse=reverse):
            info = tarfile.TarInfo(f"{prefix}/{path}" if prefix else path)
            info.size = len(data)
            info.mtime = mtime
            archive.addfile(info, io.BytesIO(data))
        for member in members or []:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buffer.getvalue()
