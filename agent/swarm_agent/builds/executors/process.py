"""The `process` executor: each step is `bash -c` in the workspace, inside bubblewrap unless the drone opted out.

The sandbox sees the host read-only, its own /tmp, /proc and /dev, its own
PID and IPC namespaces, and only the workspace writable; network stays
(builds fetch dependencies). Every step runs in a new session, so stopping
it reaches every process it started: SIGTERM to the process group, then
SIGKILL after the grace period.

Which isolation a drone offers is probed for real (`sandbox_probe`: run
`bwrap` once) and reported to the control plane at registration and in
heartbeats; the control plane hands a job that needs a sandbox only to a
drone that offers one. There is no silent fallback: without a working
bubblewrap a step is refused (the build fails as `runner_system_failure`,
saying why) unless the operator opted this drone out of sandboxing with
SWARM_AGENT_BUILD_SANDBOX=none, which the drone's record then shows.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from swarm_agent.builds.executors.base import Executor, OutputCallback, StepResult, stream_output

logger = logging.getLogger(__name__)

#: What SWARM_AGENT_BUILD_SANDBOX takes: `bubblewrap` (`auto`, the default, is the same) or the opt-out `none`.
SANDBOX_SETTINGS = ("auto", "bubblewrap", "none")
BWRAP_PROBE = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "true"]


class SandboxUnavailable(RuntimeError):
    """A step was to run sandboxed, and this drone has no working sandbox (and did not opt out)."""


@dataclass(frozen=True)
class SandboxReport:
    """What this drone offers: `bubblewrap`, `none` (the operator's opt-out) or `unavailable`, and why."""

    mode: str
    detail: str
    bwrap: str | None = None
    #: The container engine's report (`ContainerReport.as_dict()`), added by `executors.sandbox_probe`.
    containers: dict | None = field(default=None, hash=False)

    def as_dict(self) -> dict:
        """The `sandbox` field of the registration and heartbeat bodies."""
        report = {"mode": self.mode, "detail": self.detail[:300]}
        if self.containers is not None:
            report["containers"] = dict(self.containers)
        return report


def sandbox_probe(setting: str | None = None) -> SandboxReport:
    """Probe the isolation this drone can give a build, for real: `bwrap` is run once.

    `setting` is SWARM_AGENT_BUILD_SANDBOX (read from the environment when None).
    """
    setting = (os.environ.get("SWARM_AGENT_BUILD_SANDBOX", "auto") if setting is None else setting).strip().lower()
    if setting == "none":
        return SandboxReport("none", "SWARM_AGENT_BUILD_SANDBOX=none: the operator opted this drone out of "
                                     "sandboxing; build steps run as plain processes")
    if setting not in SANDBOX_SETTINGS:
        return SandboxReport("unavailable", f"SWARM_AGENT_BUILD_SANDBOX={setting[:40]!r} is not one of "
                                            f"{', '.join(SANDBOX_SETTINGS)}")
    path = shutil.which("bwrap")
    if path is None:
        return SandboxReport("unavailable", "bubblewrap (bwrap) is not installed on this drone's PATH; install it, "
                                            "or opt out with SWARM_AGENT_BUILD_SANDBOX=none")
    try:
        probe = subprocess.run([path, *BWRAP_PROBE], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return SandboxReport("unavailable", f"{path} could not be run: {error}")
    if probe.returncode != 0:
        message = probe.stderr.decode(errors="replace").strip().splitlines()
        return SandboxReport("unavailable", f"{path} exits {probe.returncode} here"
                                            f"{': ' + message[-1][:200] if message else ''} (user namespaces off?)")
    return SandboxReport("bubblewrap", f"{path} works (pid, ipc and mount namespaces)", bwrap=path)


def bubblewrap_available() -> str | None:
    """Path of a working `bwrap` this drone uses, or None (missing, unusable, or opted out)."""
    return sandbox_probe().bwrap


class ProcessExecutor(Executor):
    """Runs steps as local processes, in bubblewrap (or unsandboxed by the drone's explicit opt-out)."""

    name = "process"

    def __init__(self, *, sandbox: SandboxReport | None = None):
        self.sandbox = sandbox or sandbox_probe()
        self.bwrap = self.sandbox.bwrap
        self._process: asyncio.subprocess.Process | None = None
        self._stopped = False

    def describe(self) -> str:
        if self.sandbox.mode == "bubblewrap":
            return "process executor, bubblewrap sandbox"
        if self.sandbox.mode == "none":
            return "process executor, NO sandbox (this drone opted out: SWARM_AGENT_BUILD_SANDBOX=none)"
        return f"process executor, no sandbox available: {self.sandbox.detail}"

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
        if self.sandbox.mode not in ("bubblewrap", "none"):
            raise SandboxUnavailable(f"refusing to run a step without a sandbox: {self.sandbox.detail}")
        self._stopped = False
        self._process = await asyncio.create_subprocess_exec(
            *self._argv(command, workspace), cwd=str(workspace), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        exit_code = await stream_output(self._process, output)
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
