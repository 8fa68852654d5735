"""Asset procurement: every manifest asset fetched by its URL, verified by sha256 and size, stored once.

An asset's bytes live in the bundle store under `package-assets/<sha256>` (outside the bundle prefix the
orphan sweep walks): a second package run that needs the same digest reads it from there and never
downloads it again. A download that stalls longer than `SWARM_PACKAGE_ASSET_TIMEOUT` seconds (connect,
or between two reads), or lasts longer than that times ten in all, fails with a reason that says so.
"""
from __future__ import annotations

import hashlib
import time

import httpx
from django.conf import settings

from bundles.blobstore import BlobStore

ASSET_PREFIX = "package-assets/"


class AssetFailed(Exception):
    """An asset could not be procured; the message names it and says why."""


def asset_key(sha256: str) -> str:
    """Where the bytes of the asset with this digest are kept."""
    return f"{ASSET_PREFIX}{sha256[:2]}/{sha256}"


def manifest_assets(manifest: dict) -> list[dict]:
    """Every asset of the manifest's services, once per path (sorted by path)."""
    found = {}
    for service in manifest.get("services", []):
        for asset in service.get("assets", []):
            found.setdefault(asset["path"], dict(asset))
    return [found[path] for path in sorted(found)]


def asset_procure(*, asset: dict, store: BlobStore | None = None) -> dict:
    """Make sure the asset's verified bytes are in the store; answers the asset with `downloaded` (bool)."""
    store = store or BlobStore()
    key = asset_key(asset["sha256"])
    if store.exists(key):
        return {**asset, "downloaded": False}
    url = asset.get("url")
    if not url:
        raise AssetFailed(f"asset {asset['path']}: not in the store and the manifest gives it no url")
    timeout = float(settings.SWARM_PACKAGE_ASSET_TIMEOUT)
    deadline = time.monotonic() + timeout * 10
    writer = store.writer(known_key=None)
    digest, size = hashlib.sha256(), 0
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(timeout), follow_redirects=True) as response:
            if response.status_code != 200:
                raise AssetFailed(f"asset {asset['path']}: {url} answered HTTP {response.status_code}")
            for chunk in response.iter_bytes(1024 * 1024):
                size += len(chunk)
                if size > asset["size_bytes"]:
                    raise AssetFailed(f"asset {asset['path']}: {url} sent more than the manifest's "
                                      f"{asset['size_bytes']} bytes")
                if time.monotonic() > deadline:
                    raise AssetFailed(f"asset {asset['path']}: {url} took longer than {timeout * 10:g} s")
                digest.update(chunk)
                writer.write(chunk)
        if digest.hexdigest() != asset["sha256"] or size != asset["size_bytes"]:
            raise AssetFailed(f"asset {asset['path']}: the bytes from {url} have sha256 {digest.hexdigest()} "
                              f"({size} bytes), not the manifest's {asset['sha256']} ({asset['size_bytes']} bytes)")
        writer.commit(key)
    except httpx.TimeoutException as error:
        writer.abort()
        raise AssetFailed(f"asset {asset['path']}: {url} timed out after {timeout:g} s "
                          f"({type(error).__name__}: no answer)") from None
    except httpx.HTTPError as error:
        writer.abort()
        raise AssetFailed(f"asset {asset['path']}: could not download {url}: {error}") from None
    except BaseException:
        writer.abort()
        raise
    return {**asset, "downloaded": True}
