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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OutputCallback = Callable[[bytes], None]


@dataclass
class StepResult:
    """How a step ended: its exit code, or that it was stopped."""

    exit_code: int
    stopped: bool = False


class Executor(abc.ABC):
    """Runs build steps in a workspace."""

    name = "executor"

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
