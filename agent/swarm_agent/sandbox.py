"""One execution's boot as a supervised, sandboxed process: the spec both process-style hosts build.

The control plane's `process` runtime (workflows/runtimes/process.py) and a
drone hosting a `drone`-runtime execution (swarm_agent/plugins/executions.py)
run the boot the same way: a fresh 0700 directory per execution, the
metadata and runtime tokens in 0600 files, bubblewrap when present (the
system read-only, a private /tmp, /proc and /dev, new namespaces, every
capability dropped, `--die-with-parent`), network isolated to unix-socket
relays to exactly the control plane and the bundle store, and a detached
`swarm_agent.supervisor` that owns it all and reports how it ended.

Standard library only (the agent never imports Django).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from swarm_agent.relay import socket_map

SANDBOX_WORKDIR = "/opt/workflow"
SANDBOX_CACHE_DIR = "/var/cache/swarm"
SANDBOX_RELAY_DIR = "/run/swarm-net"
SANDBOX_TOKEN_DIR = "/run/swarm-token"
TOKEN_FILE_NAME = "metadata-token"
SPEC_FILE = "supervisor-spec.json"
SUPERVISOR_START_TIMEOUT = 30
# Read-only system paths visible in the sandbox (missing ones are skipped).
SYSTEM_BINDS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32")
ETC_BINDS = ("/etc/alternatives", "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/resolv.conf", "/etc/hosts",
             "/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/etc/localtime", "/etc/ld.so.cache",
             "/etc/mime.types")


class SupervisorStartFailed(Exception):
    """The detached supervisor did not start; nothing runs."""


def fresh_root(root: Path) -> Path:
    """An empty, owner-only directory for one execution (a redelivered start begins from nothing)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, mode=0o700)
    return root


def write_secret_file(path: Path, text: str) -> Path:
    """A file only its owner may read (tokens)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return path


def python_paths() -> list[str]:
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
    for path in python_paths():
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


#: A Unix socket's path must fit in sun_path (108 bytes on Linux, with its NUL); relays are `<dir>/<n>.sock`.
MAX_SOCKET_PATH = 100


def relay_directory(root: Path) -> Path:
    """Where an execution's relay sockets go: `<root>/net`, or a short private directory under the system's
    temporary directory when `<root>` is too deep for a socket path (a drone whose work dir is deep); the
    sandbox sees it at the same place either way (it is bind-mounted), and the supervisor removes it."""
    relay_dir = root / "net"
    if len(str(relay_dir)) + len("/999.sock") > MAX_SOCKET_PATH:
        return Path(tempfile.mkdtemp(prefix="swarm-net-"))
    relay_dir.mkdir()
    return relay_dir


def process_spec(*, root: Path, execution_id: int, metadata_url: str, token: str, runtime_token: str,
                 report_url: str, deadline_seconds: int, cache_dir: Path, cache_budget_mb: int, sandbox: str,
                 endpoints: list[tuple[str, int]] | None) -> dict:
    """The supervisor spec of a `process`-kind execution rooted at the (fresh) `root`.

    `sandbox` is `bwrap` or `none`; `endpoints` are the (host, port) pairs the
    sandbox may reach through relays, or None to share the host's network.
    The metadata token goes in a file the boot reads and deletes before the
    entrypoint starts (in the environment it would stay readable in
    /proc/<pid>/environ of the sandbox's pid 1).
    """
    workdir = root / "workflow"
    workdir.mkdir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    boot = [sys.executable, "-m", "swarm_agent.boot", "--cache-budget-mb", str(cache_budget_mb)]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "PYTHONUNBUFFERED": "1",
           "SWARM_METADATA_URL": metadata_url}
    token_dir = root / "token"
    token_dir.mkdir(mode=0o700)
    token_file = write_secret_file(token_dir / TOKEN_FILE_NAME, token)
    relays = None
    if sandbox == "bwrap":
        relay_dir = None
        if endpoints is not None:
            relay_dir = relay_directory(root)
            relays = {"directory": str(relay_dir), "endpoints": [list(endpoint) for endpoint in endpoints],
                      "remove": relay_dir.parent != root}
            env["SWARM_HTTP_UNIX_SOCKETS"] = socket_map([tuple(e) for e in endpoints], SANDBOX_RELAY_DIR)
        argv = bwrap_argv(workdir=workdir, cache_dir=cache_dir, token_dir=token_dir, relay_dir=relay_dir) + boot
        env.update(SWARM_CACHE_DIR=SANDBOX_CACHE_DIR, SWARM_WORKDIR=SANDBOX_WORKDIR,
                   SWARM_METADATA_TOKEN_FILE=f"{SANDBOX_TOKEN_DIR}/{TOKEN_FILE_NAME}")
    else:
        argv = boot
        env.update(SWARM_CACHE_DIR=str(cache_dir), SWARM_WORKDIR=str(workdir),
                   SWARM_METADATA_TOKEN_FILE=str(token_file))
    return {
        "kind": "process", "execution_id": execution_id, "root": str(root), "log": str(root / "boot.log"),
        "argv": argv, "env": env, "cwd": str(workdir), "workdir": str(workdir), "relays": relays,
        "report_url": report_url,
        "runtime_token_file": str(write_secret_file(root / "runtime-token", runtime_token)),
        "deadline_seconds": deadline_seconds,
    }


def launch_supervisor(root: Path, spec: dict) -> dict:
    """Start the detached supervisor for `spec`; returns `{host, supervisor_pid, supervisor_start_time, root}`."""
    spec_path = root / SPEC_FILE
    write_secret_file(spec_path, json.dumps(spec))
    try:
        result = subprocess.run([sys.executable, "-m", "swarm_agent.supervisor", "--spec", str(spec_path)],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=SUPERVISOR_START_TIMEOUT, cwd=str(root))
        daemon = json.loads(result.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        spec_path.unlink(missing_ok=True)
        raise SupervisorStartFailed(f"the supervisor did not start: {exc}") from exc
    return {"host": socket.gethostname(), "supervisor_pid": daemon["pid"],
            "supervisor_start_time": daemon["start_time"], "root": str(root)}
