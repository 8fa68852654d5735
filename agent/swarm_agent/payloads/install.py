"""Apply one `deploy_payload` command on the drone (synchronous: the plugin runs it in a thread).

Layout per payload type (its `install_root`, else `<payload root>/<type>`):

    <dir>/releases/<sha256>/           one unpacked release per bundle
    <dir>/releases/<sha256>.tree.json  what was unpacked (see tree.py)
    <dir>/current -> releases/<sha256> the live one, switched by renaming a symlink

Deploy: fetch through the agent's verified bundle cache (`BundleCache`, the
same code as `swarm-agent boot`), unpack with the bundle safety rules into a
hidden staging directory (hashing the file again in the same pass), rename it
to `releases/<sha256>`, switch `current`, run the health check; on any
failure `current` is left on (or put back to) the previous release and the
staging directory removed, so nothing half-installed is ever live. Old
releases beyond the type's keep-count are pruned (never current or the
previous one, which is kept for an instant revert).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarm_agent.boot.cache import SHA256_PATTERN, BundleCache, HashMismatch
from swarm_agent.boot.fetch import FetchError
from swarm_agent.boot.unpack import limits_from_environment, unpack_bundle
from swarm_agent.bundle_safety import BundleRejected
from swarm_agent.payloads import launcher
from swarm_agent.payloads.health import HealthCheckFailed, run_health_check
from swarm_agent.payloads.tree import manifest_path, record_tree, recorded_digest

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"

Report = Callable[[str, str], None]


class DeployFailed(Exception):
    """The deploy did not go live; `current` is on the previous release. The message is the reason."""


@dataclass(frozen=True)
class ApplyResult:
    """How a command ended: ok or not, why, what `current` is now, and whether the agent must restart."""

    ok: bool
    reason: str
    current_sha256: str
    restart_agent: bool = False



def _sweep_stale_staging(releases: Path) -> None:
    """Remove staging directories an earlier agent process left when it was killed mid-unpack (they are
    hidden, `.<sha256>.<pid>.partial`, and never current); this process's own are left alone."""
    own = f".{os.getpid()}.partial"
    for stale in releases.glob(".*.partial"):
        if not stale.name.endswith(own):
            shutil.rmtree(stale, ignore_errors=True)

class PayloadInstaller:
    """Installs payload releases under a root directory, through a shared verified bundle cache."""

    def __init__(self, *, payload_root: Path, cache_dir: Path, cache_budget_bytes: int | None = None,
                 fetch_timeout: float = 120.0):
        self.payload_root = Path(payload_root)
        self.payload_root.mkdir(parents=True, exist_ok=True)
        self.cache = BundleCache(cache_dir, budget_bytes=cache_budget_bytes)
        self.fetch_timeout = fetch_timeout
        self.limits = limits_from_environment()

    # --- where things are ----------------------------------------------------------

    def type_dir(self, payload_type: str, install_root: str = "") -> Path:
        return Path(install_root) if install_root else self.payload_root / payload_type

    def installed_types(self) -> dict[str, Path]:
        """Payload types this drone has installed (type → its directory)."""
        try:
            index = json.loads((self.payload_root / INDEX_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {name: Path(directory) for name, directory in index.items()}

    def _remember_type(self, payload_type: str, directory: Path) -> None:
        index = {name: str(path) for name, path in self.installed_types().items()}
        if index.get(payload_type) == str(directory):
            return
        index[payload_type] = str(directory)
        temporary = self.payload_root / f".{INDEX_FILE}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(index, sort_keys=True))
        os.replace(temporary, self.payload_root / INDEX_FILE)

    @staticmethod
    def current_sha256(directory: Path) -> str:
        """The sha256 `current` points at, or "" when nothing is installed."""
        try:
            target = os.readlink(directory / "current")
        except OSError:
            return ""
        name = Path(target).name
        return name if SHA256_PATTERN.match(name) else ""

    # --- switching ----------------------------------------------------------------

    @staticmethod
    def switch(directory: Path, sha256: str) -> None:
        """Point `current` at `releases/<sha256>` atomically (rename of a new symlink over the old one);
        an empty sha256 removes `current`. The launcher's implementation: it must stay standard-library only."""
        launcher.switch(directory, sha256)

    # --- applying -------------------------------------------------------------------

    def stage(self, command: dict, report: Report) -> tuple[Path, str]:
        """Fetch and unpack the command's release beside the live one; returns (type dir, sha256)."""
        sha256 = str(command.get("sha256") or "").lower()
        if not SHA256_PATTERN.match(sha256):
            raise DeployFailed(f"invalid sha256 {sha256!r} in the command")
        directory = self.type_dir(command["payload_type"], command.get("install_root") or "")
        releases = directory / "releases"
        try:
            releases.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DeployFailed(f"cannot create {releases}: {error}") from None
        self._remember_type(command["payload_type"], directory)
        _sweep_stale_staging(releases)
        release = releases / sha256
        if release.is_dir() and recorded_digest(releases, sha256) is not None:
            report("installing", "already on disk: instant switch")
            return directory, sha256
        report("downloading", f"{command.get('size') or '?'} bytes")
        entry = self._obtain(sha256, command.get("url") or "")
        report("installing", "unpacking")
        staging = releases / f".{sha256}.{os.getpid()}.partial"
        try:
            try:
                unpack_bundle(entry.path, staging, limits=self.limits, expected_sha256=sha256)
            except HashMismatch as mismatch:
                self.cache.discard_if_unchanged(sha256, entry.identity)
                raise DeployFailed(f"hash_mismatch: {mismatch}") from None
            except BundleRejected as rejected:
                raise DeployFailed(f"unpack refused ({rejected.code}): {rejected.detail}") from None
            except OSError as error:
                raise DeployFailed(_os_reason("unpack failed", error)) from None
            if release.exists():
                shutil.rmtree(release)
            os.rename(staging, release)
            record_tree(releases, sha256)
        except OSError as error:
            raise DeployFailed(_os_reason("install failed", error)) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return directory, sha256

    def _obtain(self, sha256: str, url: str):
        if not url:
            raise DeployFailed("the release is not on disk and the command carries no download URL")
        try:
            return self.cache.obtain(sha256, url, fetch_timeout=self.fetch_timeout)
        except HashMismatch as mismatch:
            raise DeployFailed(f"hash_mismatch: {mismatch}") from None
        except FetchError as error:
            raise DeployFailed(f"download failed: {error}") from None
        except OSError as error:
            raise DeployFailed(_os_reason("download failed", error)) from None

    def apply(self, command: dict, report: Report) -> ApplyResult:
        """Deploy (or revert to) the command's release; never leaves a half-installed `current`."""
        directory = self.type_dir(command["payload_type"], command.get("install_root") or "")
        previous = self.current_sha256(directory)
        if command.get("action") == "revert" and not command.get("sha256"):
            self.switch(directory, "")
            return ApplyResult(True, "reverted to nothing: the type had no release before", "")
        try:
            directory, sha256 = self.stage(command, report)
        except DeployFailed as failure:
            return ApplyResult(False, str(failure), previous)
        release = directory / "releases" / sha256
        report("verifying", "switching and checking")
        try:
            self.switch(directory, sha256)
        except OSError as error:
            return ApplyResult(False, _os_reason("switching current failed", error), self.current_sha256(directory))
        try:
            verdict = run_health_check(command.get("health") or {}, release_dir=release,
                                       payload_type=command["payload_type"], sha256=sha256)
        except HealthCheckFailed as failure:
            if previous != sha256:
                self.switch(directory, previous)
            return ApplyResult(False, f"{failure}; current is back on "
                                      f"{previous[:12] + '…' if previous else 'nothing'}", previous)
        self.prune(directory, keep=int(command.get("keep_releases") or 3), protect={sha256, previous})
        return ApplyResult(True, verdict, sha256)

    def prune(self, directory: Path, *, keep: int, protect: set[str]) -> list[str]:
        """Remove the oldest releases beyond `keep` (never one in `protect`); returns what went."""
        releases = directory / "releases"
        candidates = []
        for path in releases.iterdir() if releases.is_dir() else []:
            if path.is_dir() and SHA256_PATTERN.match(path.name):
                candidates.append((path.stat().st_mtime, path))
        candidates.sort(reverse=True)  # newest first
        present = {path.name for _, path in candidates} & protect
        spare = max(0, keep - len(present))
        removed = []
        for _, path in candidates:
            if path.name in protect:
                continue
            if spare > 0:
                spare -= 1
                continue
            shutil.rmtree(path, ignore_errors=True)
            manifest_path(releases, path.name).unlink(missing_ok=True)
            removed.append(path.name)
        return removed


def _os_reason(what: str, error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return f"disk_full: {what}: {error}"
    return f"{what}: {error}"
