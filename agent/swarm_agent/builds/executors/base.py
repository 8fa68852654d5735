"""The executor interface every executor implements: how a build's steps run on a drone.

An executor runs one shell step at a time in the build's workspace, streams
its output to a callback as it comes, and can stop it (SIGTERM to the whole
process group, SIGKILL after a grace period). `process` is the built-in one
(`executors/process.py`); a container executor (Docker/Podman, using the
job's `image`) implements the same three methods and is named in
`executors/__init__.py`.
"""
from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OutputCallback = Callable[[bytes], None]

READ_SIZE = 64 * 1024
#: A partial line is shipped after this long without a newline (progress bars, prompts).
PARTIAL_LINE_SECONDS = 0.25


@dataclass
class StepResult:
    """How a step ended: its exit code, or that it was stopped."""

    exit_code: int
    stopped: bool = False


class Executor(abc.ABC):
    """Runs build steps in a workspace."""

    name = "executor"
    #: Whether steps run on this host (they get its PATH, a HOME in the build's directory, TMPDIR) or in an
    #: image of their own, which brings those (then only the job's variables are passed).
    host_environment = True

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the build log: what runs the steps and how it is isolated."""

    @abc.abstractmethod
    async def run_step(self, command: str, *, workspace: Path, env: dict[str, str], output: OutputCallback,
                       image: str = "") -> StepResult:
        """Run one shell command; return when it exits or was stopped."""

    @abc.abstractmethod
    async def stop(self, *, grace: float) -> None:
        """Stop the running step: SIGTERM its process group, SIGKILL after `grace` seconds."""


async def stream_output(process: asyncio.subprocess.Process, output: OutputCallback) -> int:
    """Ship a process's stdout to `output` as it comes (whole lines, or a partial one after a quiet spell);
    return its exit code."""
    pending = b""
    read = asyncio.ensure_future(process.stdout.read(READ_SIZE))
    try:
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
    finally:
        if not read.done():
            read.cancel()
    if pending:
        output(pending)
    return await process.wait()
