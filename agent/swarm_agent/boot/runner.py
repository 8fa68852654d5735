"""Run a workflow's entrypoint with its env and secrets, streaming output lines to the reporter.

The entrypoint gets a clean environment (PATH, LANG, HOME, the execution's
env and secrets, SWARM_EXECUTION_ID, SWARM_INPUTS) — never the boot's own
environment, so the metadata token is not handed to the workflow. It runs in
its own process group, which the boot kills as a whole on timeout, when the
control plane says the execution ended, when the group's memory passes the
workflow's `memory_mb`, or when the boot itself is told to stop
(SIGTERM/SIGINT).

Memory is watched without cgroups (which a sandbox or a small VM may not
offer): the resident memory of every process in the entrypoint's group is
summed from /proc every MEMORY_POLL_SECONDS, and the group is killed once
it passes the limit. An allocation faster than one poll can overshoot it
until the next poll; the kernel's OOM killer stays the last resort.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

RUNTIMES = ("python311", "node20", "custom")

#: How often the entrypoint group's resident memory is measured (when it has a limit).
MEMORY_POLL_SECONDS = 0.25
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def group_resident_bytes(pgid: int, proc: Path = Path("/proc")) -> int:
    """Resident memory of every process in process group `pgid` (0 when /proc cannot be read)."""
    total = 0
    try:
        entries = os.listdir(proc)
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = (proc / entry / "stat").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        # "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
        #  cstime priority nice num_threads itrealvalue starttime vsize rss ..." — comm may hold spaces and parens.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 21 and int(fields[2]) == pgid:
            total += int(fields[21]) * PAGE_SIZE
    return total


class EntrypointError(Exception):
    """The entrypoint cannot be started (unknown runtime, missing file, no interpreter)."""


def resolve_user(name: str) -> tuple[int, int] | None:
    """(uid, gid) of a user name or numeric uid; None for an empty name."""
    if not name:
        return None
    import pwd

    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError) as exc:
        raise EntrypointError(f"no such user to run the entrypoint as: {name!r}") from exc
    return entry.pw_uid, entry.pw_gid


def hand_over(workdir: Path, user: tuple[int, int]) -> None:
    """Give the unpacked workdir to the user the entrypoint runs as."""
    uid, gid = user
    for directory, subdirectories, files in os.walk(workdir):
        os.chown(directory, uid, gid)
        for name in (*subdirectories, *files):
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def entrypoint_argv(runtime: str, entrypoint: str, workdir: Path) -> list[str]:
    """The command for a runtime: `python <entrypoint>`, `node <entrypoint>`, or the file itself."""
    target = (workdir / entrypoint).resolve()
    if workdir.resolve() not in target.parents:
        raise EntrypointError(f"entrypoint {entrypoint!r} is outside the workdir")
    if not target.is_file():
        raise EntrypointError(f"entrypoint {entrypoint!r} is not a file in the bundle")
    if runtime == "python311":
        interpreter = shutil.which("python3") or shutil.which("python") or sys.executable
        return [interpreter, str(target)]
    if runtime == "node20":
        interpreter = shutil.which("node")
        if interpreter is None:
            raise EntrypointError("runtime node20 needs `node` on PATH")
        return [interpreter, str(target)]
    if runtime == "custom":
        if not os.access(target, os.X_OK):
            raise EntrypointError(f"entrypoint {entrypoint!r} is not executable (runtime custom)")
        return [str(target)]
    raise EntrypointError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")


def child_environment(*, workdir: Path, env: dict, secrets: dict, execution_id, inputs: dict) -> dict:
    """The entrypoint's whole environment (nothing inherited from the boot)."""
    child = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(workdir),
        "TMPDIR": "/tmp",
        "PYTHONUNBUFFERED": "1",
        "SWARM_EXECUTION_ID": str(execution_id or ""),
        "SWARM_INPUTS": json.dumps(inputs or {}),
    }
    child.update({str(k): str(v) for k, v in (env or {}).items()})
    child.update({str(k): str(v) for k, v in (secrets or {}).items()})
    return child


class EntrypointRun:
    """One running entrypoint; `wait()` returns its exit code (128+N when killed by signal N)."""

    def __init__(self, argv: list[str], *, workdir: Path, environment: dict, reporter,
                 memory_limit_mb: int | None = None, user: tuple[int, int] | None = None):
        self.reporter = reporter
        self.timed_out = False
        self.stopped = False
        self.memory_limit_bytes = memory_limit_mb * 1024 * 1024 if memory_limit_mb else None
        self.memory_exceeded = False
        self.peak_resident_bytes = 0
        self.process = subprocess.Popen(
            argv, cwd=str(workdir), env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, process_group=0,
            **({"user": user[0], "group": user[1], "extra_groups": []} if user else {}),
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, pipe, stream: str) -> None:
        for raw in iter(pipe.readline, b""):
            self.reporter.output(stream, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        pipe.close()

    def kill(self) -> None:
        """Kill the entrypoint's whole process group."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _measure_memory(self) -> None:
        resident = group_resident_bytes(self.process.pid)
        self.peak_resident_bytes = max(self.peak_resident_bytes, resident)
        if self.memory_limit_bytes is not None and resident > self.memory_limit_bytes:
            self.memory_exceeded = True
            self.kill()

    def wait(self, timeout_sec: float | None) -> int:
        deadline = None if not timeout_sec else time.monotonic() + timeout_sec
        next_measure = time.monotonic()
        while self.process.poll() is None:
            now = time.monotonic()
            if now >= next_measure and not self.memory_exceeded:
                self._measure_memory()
                next_measure = now + MEMORY_POLL_SECONDS
            if deadline is not None and now >= deadline:
                self.timed_out = True
                self.kill()
            elif self.reporter.ended.is_set():
                self.stopped = True
                self.kill()
            try:
                self.process.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
        for reader in self._readers:
            reader.join(5)
        # Reap anything the entrypoint left behind in its group.
        self.kill()
        code = self.process.returncode
        return 128 - code if code < 0 else code
