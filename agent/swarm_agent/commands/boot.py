"""`swarm-agent boot`: the VM boot script — metadata, cached verified bundle, safe unpack, run, report.

Two ways to say what to run:

* `--metadata-url` / `SWARM_METADATA_URL` with `SWARM_METADATA_TOKEN` (the
  orchestrated way): everything, including env and secrets, comes from the
  control plane's metadata service, and events/output go back to it.
* `BUNDLE_URL` + `BUNDLE_HASH` (+ `SWARM_RUNTIME`, `SWARM_ENTRYPOINT`): a bare
  boot without a control plane; events are printed as JSON lines on stderr.

Exit code: the entrypoint's (128+N when killed by signal N); 70 when the
bundle could not be fetched, verified or unpacked (nothing ran).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import json

from swarm_agent.boot.cache import BundleCache, HashMismatch
from swarm_agent.boot.fetch import FetchError
from swarm_agent.boot.reporter import EventReporter
from swarm_agent.boot.runner import (
    EntrypointError,
    EntrypointRun,
    child_environment,
    entrypoint_argv,
    hand_over,
    resolve_user,
)
from swarm_agent.boot.unpack import limits_from_environment, unpack_bundle
from swarm_agent.boot.http import HttpFailure, request_json
from swarm_agent.bundle_safety import BundleRejected

DEFAULT_CACHE_DIR = "/var/cache/swarm"
DEFAULT_WORKDIR = "/opt/workflow"
DEFAULT_CACHE_BUDGET_MB = 2048
BOOT_FAILED = 70
#: How long the metadata service may stay unreachable (a control plane restarting) before the boot gives up.
METADATA_RETRY_SECONDS = float(os.environ.get("SWARM_REPORT_RETRY_SECONDS", "900"))


def register(subparsers) -> None:
    """Add the `boot` subcommand."""
    parser = subparsers.add_parser("boot", help="fetch, verify, unpack and run a workflow bundle",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata-url", default=os.environ.get("SWARM_METADATA_URL"),
                        help="metadata service URL (env SWARM_METADATA_URL; token in SWARM_METADATA_TOKEN, "
                             "or in the file SWARM_METADATA_TOKEN_FILE, deleted once read)")
    parser.add_argument("--bundle-url", default=os.environ.get("BUNDLE_URL"), help="env BUNDLE_URL")
    parser.add_argument("--bundle-hash", default=os.environ.get("BUNDLE_HASH"), help="env BUNDLE_HASH (sha256)")
    parser.add_argument("--runtime", default=os.environ.get("SWARM_RUNTIME", "python311"),
                        help="without metadata: python311, node20 or custom (env SWARM_RUNTIME)")
    parser.add_argument("--entrypoint", default=os.environ.get("SWARM_ENTRYPOINT", "main.py"),
                        help="without metadata: the file to run (env SWARM_ENTRYPOINT)")
    parser.add_argument("--timeout", type=int, default=int(os.environ.get("SWARM_TIMEOUT_SEC", "0")),
                        help="without metadata: seconds before the entrypoint is killed (0: none)")
    parser.add_argument("--memory-mb", type=int, default=int(os.environ.get("SWARM_MEMORY_MB", "0")),
                        help="without metadata: MiB of resident memory before the entrypoint is killed (0: none)")
    parser.add_argument("--timeout-grace", type=int, default=int(os.environ.get("SWARM_TIMEOUT_GRACE_SEC", "15")),
                        help="seconds past timeout_sec before the boot itself kills the entrypoint "
                             "(env SWARM_TIMEOUT_GRACE_SEC, default 15; the control plane times out first)")
    parser.add_argument("--cache-dir", default=os.environ.get("SWARM_CACHE_DIR", DEFAULT_CACHE_DIR),
                        help=f"bundle cache root (env SWARM_CACHE_DIR, default {DEFAULT_CACHE_DIR})")
    parser.add_argument("--cache-budget-mb", type=int,
                        default=int(os.environ.get("SWARM_CACHE_BUDGET_MB", DEFAULT_CACHE_BUDGET_MB)),
                        help="cache size budget in MiB, least recently used out first (env SWARM_CACHE_BUDGET_MB)")
    parser.add_argument("--workdir", default=os.environ.get("SWARM_WORKDIR", DEFAULT_WORKDIR),
                        help=f"where the bundle is unpacked (env SWARM_WORKDIR, default {DEFAULT_WORKDIR})")
    parser.add_argument("--shared-cache-dir", action="append",
                        default=list(filter(None, os.environ.get("SWARM_SHARED_CACHE_DIR", "").split(":"))),
                        help="read-only bundle directory looked in after the cache misses, e.g. the host's cache "
                             "inside a microVM (env SWARM_SHARED_CACHE_DIR, colon-separated)")
    parser.add_argument("--run-as", default=os.environ.get("SWARM_RUN_AS", ""),
                        help="run the entrypoint as this user (name or uid), owning the workdir; the boot stays "
                             "who it is (env SWARM_RUN_AS; the microVM's guest uses an unprivileged user)")
    parser.set_defaults(handler=handle_boot)


def _fetch_metadata(url: str, token: str) -> dict:
    give_up = time.monotonic() + METADATA_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            status, text = request_json("GET", url, headers={"X-Swarm-Metadata-Token": token})
        except HttpFailure as exc:
            status, last_error = None, str(exc)
        else:
            last_error = f"HTTP {status}"
        if status is not None and status < 500:
            if status != 200:
                raise SystemExit(f"swarm-agent boot: the metadata service refused: {status} {text[:300]}")
            return json.loads(text)
        if time.monotonic() > give_up:
            raise SystemExit(f"swarm-agent boot: the metadata service is unreachable: {last_error}")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _metadata_token() -> str:
    """The token from SWARM_METADATA_TOKEN, or read once from SWARM_METADATA_TOKEN_FILE and deleted.

    Deleting the file before the entrypoint starts keeps the token away from
    it (the process runtime uses the file for that reason).
    """
    token_file = os.environ.get("SWARM_METADATA_TOKEN_FILE")
    if token_file:
        try:
            with open(token_file) as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise SystemExit(f"swarm-agent boot: cannot read SWARM_METADATA_TOKEN_FILE: {exc}") from exc
        try:
            os.unlink(token_file)
        except OSError:
            pass
        return token
    return os.environ.get("SWARM_METADATA_TOKEN", "")


def _plan(args) -> tuple[dict, EventReporter]:
    """What to run, and where to report it."""
    if args.metadata_url:
        token = _metadata_token()
        if not token:
            raise SystemExit("swarm-agent boot: SWARM_METADATA_TOKEN or SWARM_METADATA_TOKEN_FILE is required "
                             "with a metadata URL")
        metadata = _fetch_metadata(args.metadata_url, token)
        return metadata, EventReporter(args.metadata_url.rstrip("/") + "/events", token)
    if not (args.bundle_url and args.bundle_hash):
        raise SystemExit("swarm-agent boot: give --metadata-url (SWARM_METADATA_URL) or BUNDLE_URL and BUNDLE_HASH")
    metadata = {"execution_id": None, "bundle_url": args.bundle_url, "bundle_hash": args.bundle_hash.lower(),
                "runtime": args.runtime, "entrypoint": args.entrypoint, "timeout_sec": args.timeout,
                "memory_mb": args.memory_mb, "env": {}, "secrets": {}, "inputs": {}}
    return metadata, EventReporter(None, None)


def _prepare_bundle(metadata: dict, cache: BundleCache, workdir: Path, reporter: EventReporter) -> None:
    """Get the bundle through the cache and unpack it, verified; raises on any failure.

    A hit is verified while it is unpacked (one read of the file); a miss is
    verified while it is downloaded. Either way the hash is checked before
    anything runs.
    """
    sha256, url = metadata["bundle_hash"], metadata["bundle_url"]
    limits = limits_from_environment()
    if not cache.has(sha256):
        reporter.event("bundle_cache_miss", f"bundle {sha256[:12]} is not in the cache", {"reason": "absent"})
    entry = cache.obtain(sha256, url)
    if entry.hit:
        try:
            unpacked = unpack_bundle(entry.path, workdir, limits=limits, expected_sha256=sha256)
        except HashMismatch as mismatch:
            cache.discard_if_unchanged(sha256, entry.identity)
            reporter.event("bundle_cache_miss", "the cached bundle is corrupt: discarded, fetching it again",
                           {"reason": "corrupt", "actual_sha256": mismatch.actual})
            entry = cache.obtain(sha256, url)
        else:
            reporter.event("bundle_cache_hit", f"bundle {sha256[:12]} found in the cache", {"path": str(entry.path)})
            reporter.event("bundle_verified", f"sha256 {sha256} verified", {"sha256": sha256, "cached": True})
            _report_unpacked(reporter, unpacked, workdir)
            return
        if entry.hit:  # a concurrent boot fetched it again first
            unpacked = unpack_bundle(entry.path, workdir, limits=limits, expected_sha256=sha256)
            reporter.event("bundle_verified", f"sha256 {sha256} verified", {"sha256": sha256, "cached": True})
            _report_unpacked(reporter, unpacked, workdir)
            return
    fetched = entry.fetched
    reporter.event("bundle_fetched", f"fetched {fetched.size} bytes in {fetched.seconds * 1000:.0f} ms",
                   {"bytes": fetched.size, "ms": round(fetched.seconds * 1000),
                    "mib_per_s": round(fetched.size / 1048576 / max(fetched.seconds, 1e-6), 1)})
    reporter.event("bundle_verified", f"sha256 {sha256} verified", {"sha256": sha256, "cached": False})
    unpacked = unpack_bundle(entry.path, workdir, limits=limits)
    _report_unpacked(reporter, unpacked, workdir)


def _report_unpacked(reporter: EventReporter, unpacked, workdir: Path) -> None:
    reporter.event("unpacked", f"{unpacked.members} members, {unpacked.unpacked_bytes} bytes into {workdir}",
                   {"members": unpacked.members, "bytes": unpacked.unpacked_bytes,
                    "ms": round(unpacked.seconds * 1000), "workdir": str(workdir)})


def _hide_own_environment() -> None:
    """Make this process non-dumpable, so the entrypoint cannot read the token from /proc/<pid>/environ.

    The entrypoint runs under the same uid; with no capabilities (the sandbox
    drops them all) it is refused access to a non-dumpable process's environ
    and memory. Best effort: only on Linux.
    """
    try:
        import ctypes

        pr_set_dumpable = 4
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def handle_boot(args) -> int:
    """Run the whole boot; returns the entrypoint's exit code (or 70 when nothing ran)."""
    _hide_own_environment()
    metadata, reporter = _plan(args)
    workdir = Path(args.workdir)
    running: dict[str, EntrypointRun] = {}

    def on_signal(signum, frame):
        run = running.get("run")
        if run is not None:
            run.kill()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cache = BundleCache(args.cache_dir, budget_bytes=args.cache_budget_mb * 1024 * 1024,
                            shared_directories=args.shared_cache_dir)
        try:
            user = resolve_user(args.run_as)
            _prepare_bundle(metadata, cache, workdir, reporter)
            if user is not None:
                hand_over(workdir, user)
            argv = entrypoint_argv(metadata["runtime"], metadata["entrypoint"], workdir)
        except HashMismatch as mismatch:
            reporter.event("error", f"{mismatch}; the bundle was discarded and nothing ran",
                           {"code": "hash_mismatch", "expected": mismatch.expected, "actual": mismatch.actual})
            return BOOT_FAILED
        except BundleRejected as rejected:
            reporter.event("error", f"unsafe bundle refused: {rejected.detail}; nothing ran",
                           {"code": rejected.code})
            return BOOT_FAILED
        except (FetchError, EntrypointError, OSError, ValueError) as exc:
            reporter.event("error", f"{exc}; nothing ran", {"code": type(exc).__name__})
            return BOOT_FAILED
        environment = child_environment(workdir=workdir, env=metadata.get("env"), secrets=metadata.get("secrets"),
                                        execution_id=metadata.get("execution_id"), inputs=metadata.get("inputs"))
        run = EntrypointRun(argv, workdir=workdir, environment=environment, reporter=reporter,
                            memory_limit_mb=metadata.get("memory_mb") or None, user=user)
        running["run"] = run
        reporter.event("started", f"started {' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv))}",
                       {"runtime": metadata["runtime"], "entrypoint": metadata["entrypoint"],
                        "pid": run.process.pid})
        # The control plane enforces timeout_sec; this is the backstop should it be unreachable.
        timeout = metadata.get("timeout_sec") or 0
        grace = args.timeout_grace if args.metadata_url else 0
        exit_code = run.wait(timeout + grace if timeout else None)
        reporter.flush()
        note = (" (killed: timeout)" if run.timed_out
                else f" (killed: memory over the {metadata['memory_mb']} MiB limit)" if run.memory_exceeded
                else " (killed: the execution ended)" if run.stopped else "")
        reporter.event("exited", f"exited with code {exit_code}{note}",
                       {"exit_code": exit_code, "timed_out": run.timed_out, "memory_exceeded": run.memory_exceeded,
                        "peak_resident_mb": round(run.peak_resident_bytes / (1024 * 1024), 1)})
        return exit_code
    finally:
        reporter.close()
        sys.stdout.flush()
