"""Staging: one platform's binaries, the assets and the canonical manifest, packed reproducibly.

The tarball is `swarm_agent.packing.pack_directory` of a directory laid out as the manifest says
(`bundle.json` at the top, each binary at its `binaries.<platform>.path`, each asset at its `path`):
sorted members, fixed mtimes and owners, a gzip header without a time, so the same inputs always give
the same sha256.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from swarm_agent.packing import PackedBundle, pack_directory

from bundles.blobstore import BlobStore
from deployments.packaging.assets import asset_key


def _copy_from_store(store: BlobStore, key: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with store.open(key) as source, open(target, "wb") as handle:
        shutil.copyfileobj(source, handle, 1024 * 1024)


def stage_platform(*, manifest_canonical: bytes, binaries: list[dict], assets: list[dict],
                   work_dir: Path | None = None) -> tuple[PackedBundle, Path]:
    """Pack `bundle.json`, `binaries` ([{path, storage_key, executable}]) and `assets`; answers the pack and
    the directory to remove once it is registered."""
    store = BlobStore()
    root = Path(tempfile.mkdtemp(prefix="swarm-package-", dir=work_dir))
    tree = root / "tree"
    tree.mkdir()
    (tree / "bundle.json").write_bytes(manifest_canonical)
    for binary in binaries:
        target = tree / binary["path"]
        _copy_from_store(store, binary["storage_key"], target)
        target.chmod(0o755)
    for asset in assets:
        target = tree / asset["path"]
        _copy_from_store(store, asset_key(asset["sha256"]), target)
        target.chmod(0o644)
    return pack_directory(tree, root / "bundle.tar.gz"), root
