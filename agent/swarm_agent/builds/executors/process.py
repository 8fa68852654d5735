"""The `process` executor: each step is `bash -c` in the workspace, inside bubblewrap when available.

The sandbox (when `bwrap` exists and works here) sees the host read-only,
its own /tmp, /proc and /dev, its own PID and IPC namespaces, and only the
workspace writable; network stays (builds fetch dependencies). Every step
runs in a new session, so stopping it reaches every process it started:
SIGTERM to the process group, then SIGKILL after the grace period.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

from swarm_agent.builds.executors.base import Executor, OutputCallback, StepResult

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
#: A partial line is shipped after this long without a newline (progress bars, prompts).
PARTIAL_LINE_SECONDS = 0.25


def bubblewrap_available() -> str | None:
    """Path of a working `bwrap`, or None (missing, or user namespaces unavailable)."""
    mode = os.environ.get("SWARM_AGENT_BUILD_SANDBOX", "auto")
    if mode == "none":
        return None
    path = shutil.which("bwrap")
    if path is None:
        return None
    try:
        probe = subprocess.run([path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
                                "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if probe.returncode == 0 else None


class ProcessExecutor(Executor):
    """Runs steps as local processes (sandboxed by bubblewrap when present)."""

    name = "process"

    def __init__(self, *, sandbox: bool | None = None):
        self.bwrap = bubblewrap_available() if sandbox in (None, True) else None
        self._process: asyncio.subprocess.Process | None = None
        self._stopped = False

    def describe(self) -> str:
        return "process executor, " + ("bubblewrap sandbox" if self.bwrap else "no sandbox (bwrap not available)")

    def _argv(self, command: str, workspace: Path) -> list[str]:
        shell = ["bash", "-e", "-o", "pipefail", "-c", command] if shutil.which("bash") else ["sh", "-e", "-c",
                                                                                            command]
        if not self.bwrap:
            return shell
        workspace = str(Path(workspace).resolve())
        return [self.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/",
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--bind", workspace, workspace,
                "--chdir", workspace, *shell]

    async def run_step(self, command: str, *, workspace: Path, env: dict[str, str], output: OutputCallback,
                       image: str = "") -> StepResult:
        self._stopped = False
        self._process = await asyncio.create_subprocess_exec(
            *self._argv(command, workspace), cwd=str(workspace), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        process = self._process
        pending = b""
        read = asyncio.ensure_future(process.stdout.read(READ_SIZE))
        while True:
            done, _ = await asyncio.wait({read}, timeout=PARTIAL_LINE_SECONDS)
            if not done:
                if pending:
                    output(pending)
                    pending = b""
                continue
            data = read.result()
            if not data:
                break
            pending += data
            cut = pending.rfind(b"\n")
            if cut >= 0:
                output(pending[:cut + 1])
                pending = pending[cut + 1:]
            if len(pending) >= READ_SIZE:
                output(pending)
                pending = b""
            read = asyncio.ensure_future(process.stdout.read(READ_SIZE))
        if pending:
            output(pending)
        exit_code = await process.wait()
        # The step's shell is gone; anything it left in its group goes too.
        self._kill_group(signal.SIGKILL)
        self._process = None
        return StepResult(exit_code=exit_code, stopped=self._stopped)

    def _kill_group(self, signum) -> bool:
        process = self._process
        if process is None:
            return False
        try:
            os.killpg(process.pid, signum)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    async def stop(self, *, grace: float) -> None:
        process = self._process
        if process is None:
            return
        self._stopped = True
        self._kill_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=grace)
        except asyncio.TimeoutError:
            pass
        # Whether or not the leader exited, nothing of the group may survive the grace period.
        self._kill_group(signal.SIGKILL)
