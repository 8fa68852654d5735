"""The `process` runtime: `swarm-agent boot` as a local, sandboxed process group.

With bubblewrap (`bwrap`) on PATH the boot runs in a sandbox: the system
directories and the Python environment bound read-only, a private /tmp,
/proc and /dev, new pid/ipc/uts namespaces, every capability dropped, a new session, the bundle
cache and a fresh per-execution workdir (at /opt/workflow) the only
writable places, and `--die-with-parent`. Without bwrap it is a plain
subprocess in its own session, and a warning is logged for every start.

Network (`SWARM_PROCESS_NETWORK=isolated`, the default, with bwrap): the
sandbox gets its own network namespace (`--unshare-net`: loopback only) and
unix sockets relayed to exactly two endpoints — the control plane and the
bundle store (see `relay.py`). With `host` it shares the worker's network.

The Celery task returns as soon as the execution's detached supervisor
(`swarm_agent.supervisor`, see `supervised.py`) has started: it holds the
relays, runs the sandbox, keeps `boot.log`, and reports a boot that died
without reporting its own exit. Workers, beat and web servers can all
restart meanwhile; the execution runs on.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from pathlib import Path

from django.conf import settings

from bundles.downloads import bundle_download_url
from swarm_agent.relay import distinct_endpoints, socket_map
from workflows.services.runtime_reports import runtime_token_issue, supervisor_deadline_seconds
from workflows.runtimes.base import RuntimeStartFailed, register_runtime
from workflows.runtimes.supervised import (
    SupervisedRuntime,
    fresh_execution_root,
    launch_supervisor,
    runtime_report_url,
    write_secret_file,
)

logger = logging.getLogger(__name__)

SANDBOX_WORKDIR = "/opt/workflow"
SANDBOX_CACHE_DIR = "/var/cache/swarm"
SANDBOX_RELAY_DIR = "/run/swarm-net"
SANDBOX_TOKEN_DIR = "/run/swarm-token"
TOKEN_FILE_NAME = "metadata-token"
# Read-only system paths visible in the sandbox (missing ones are skipped).
SYSTEM_BINDS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32")
ETC_BINDS = ("/etc/alternatives", "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/resolv.conf", "/etc/hosts",
             "/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/etc/localtime", "/etc/ld.so.cache",
             "/etc/mime.types")
KILL_GRACE_SECONDS = 3.0


def sandbox_mode() -> str:
    """`bwrap` when bubblewrap is used for new executions, else `none`."""
    wanted = settings.SWARM_PROCESS_SANDBOX
    if wanted == "none":
        return "none"
    if shutil.which("bwrap"):
        return "bwrap"
    if wanted == "bwrap":
        raise RuntimeStartFailed("SWARM_PROCESS_SANDBOX=bwrap but bubblewrap (bwrap) is not installed")
    return "none"


def _python_paths() -> list[str]:
    """Directories the boot's Python needs: the interpreter, the venv, the agent package."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix}
    spec = importlib.util.find_spec("swarm_agent")
    if spec is not None and spec.origin:
        paths.add(str(Path(spec.origin).resolve().parent.parent))
    executable_dir = os.path.dirname(os.path.realpath(sys.executable))
    paths.add(executable_dir)
    return sorted(p for p in paths if p and os.path.exists(p))


def bwrap_argv(*, workdir: Path, cache_dir: Path, token_dir: Path, relay_dir: Path | None = None) -> list[str]:
    """The bubblewrap prefix for one execution's boot."""
    argv = ["bwrap"]
    for path in SYSTEM_BINDS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            argv += ["--ro-bind", path, path]
    for path in ETC_BINDS:
        argv += ["--ro-bind-try", path, path]
    # The private /tmp goes first: an interpreter or checkout that lives under /tmp
    # (a CI clone, a test venv) is then bound on top of it instead of hidden by it.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in _python_paths():
        argv += ["--ro-bind", path, path]
    argv += [
        "--bind", str(cache_dir), SANDBOX_CACHE_DIR,
        "--bind", str(workdir), SANDBOX_WORKDIR,
        "--bind", str(token_dir), SANDBOX_TOKEN_DIR,
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        # Run as root, bwrap would keep nearly every capability inside (mount, ptrace, ...).
        "--cap-drop", "ALL",
        "--new-session", "--die-with-parent",
        "--chdir", SANDBOX_WORKDIR,
    ]
    if relay_dir is not None:
        # No network at all inside, except the relays to the control plane and the bundle store.
        argv += ["--unshare-net", "--bind", str(relay_dir), SANDBOX_RELAY_DIR]
    return argv


@register_runtime("process")
class ProcessRuntime(SupervisedRuntime):
    """Runs the boot as a local process group, in bubblewrap when available, owned by a supervisor."""

    def start(self, execution, metadata_url: str, token: str) -> dict:
        mode = sandbox_mode()
        root = fresh_execution_root(execution)
        workdir = root / "workflow"
        cache_dir = Path(settings.SWARM_PROCESS_CACHE_DIR)
        workdir.mkdir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        boot = [sys.executable, "-m", "swarm_agent.boot",
                "--cache-budget-mb", str(settings.SWARM_PROCESS_CACHE_BUDGET_MB)]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/tmp",
            "PYTHONUNBUFFERED": "1",
            "SWARM_METADATA_URL": metadata_url,
        }
        # The token goes in a file the boot reads and deletes before the entrypoint starts:
        # in the environment, it would stay readable in /proc/<pid>/environ of the sandbox's pid 1.
        token_dir = root / "token"
        token_dir.mkdir(mode=0o700)
        token_file = write_secret_file(token_dir / TOKEN_FILE_NAME, token)
        relays = None
        if mode == "bwrap":
            relay_dir = None
            if settings.SWARM_PROCESS_NETWORK == "isolated":
                relay_dir = root / "net"
                endpoints = distinct_endpoints([metadata_url, bundle_download_url(execution.version.bundle)])
                relays = {"directory": str(relay_dir), "endpoints": endpoints}
                env["SWARM_HTTP_UNIX_SOCKETS"] = socket_map(endpoints, SANDBOX_RELAY_DIR)
                relay_dir.mkdir()
            argv = bwrap_argv(workdir=workdir, cache_dir=cache_dir, token_dir=token_dir, relay_dir=relay_dir) + boot
            env.update(SWARM_CACHE_DIR=SANDBOX_CACHE_DIR, SWARM_WORKDIR=SANDBOX_WORKDIR,
                       SWARM_METADATA_TOKEN_FILE=f"{SANDBOX_TOKEN_DIR}/{TOKEN_FILE_NAME}")
        else:
            logger.warning(
                "bubblewrap (bwrap) is not installed: execution %s runs as a plain, UNSANDBOXED subprocess",
                execution.pk,
            )
            argv = boot
            env.update(SWARM_CACHE_DIR=str(cache_dir), SWARM_WORKDIR=str(workdir),
                       SWARM_METADATA_TOKEN_FILE=str(token_file))
        log_path = root / "boot.log"
        runtime_token = runtime_token_issue(execution=execution)
        spec = {
            "kind": "process", "execution_id": execution.pk, "root": str(root), "log": str(log_path),
            "argv": argv, "env": env, "cwd": str(workdir), "workdir": str(workdir), "relays": relays,
            "report_url": runtime_report_url(execution),
            "runtime_token_file": str(write_secret_file(root / "runtime-token", runtime_token)),
            "deadline_seconds": supervisor_deadline_seconds(execution=execution),
        }
        state = launch_supervisor(root, spec)
        state.update(sandbox=mode, network="isolated" if relays else "host", workdir=str(workdir), log=str(log_path))
        return state
