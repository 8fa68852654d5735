"""Build executors: the interface (`base`), the `process` and `container` executors, and the lookup by name.

`base` imports nothing of the executors and every executor imports only
`base`, so that adding one cannot close an import cycle; this package is the
one place that knows them all, and so the one that puts together what the
drone reports it offers (`sandbox_probe`: bubblewrap and a container engine).
"""
from __future__ import annotations

import dataclasses

from swarm_agent.builds.executors.base import Executor, OutputCallback, StepResult
from swarm_agent.builds.executors.container import (
    ContainerExecutor,
    ContainerReport,
    ContainerUnavailable,
    container_probe,
)
from swarm_agent.builds.executors.process import (
    ProcessExecutor,
    SandboxReport,
    SandboxUnavailable,
    bubblewrap_available,
)
from swarm_agent.builds.executors.process import sandbox_probe as process_sandbox_probe

#: Executors by the name `SWARM_AGENT_BUILD_EXECUTOR` gives (a job with an `image` always takes `container`).
EXECUTORS: dict[str, type[Executor]] = {ProcessExecutor.name: ProcessExecutor,
                                        ContainerExecutor.name: ContainerExecutor}

__all__ = [
    "EXECUTORS",
    "ContainerExecutor",
    "ContainerReport",
    "ContainerUnavailable",
    "Executor",
    "OutputCallback",
    "ProcessExecutor",
    "SandboxReport",
    "SandboxUnavailable",
    "StepResult",
    "bubblewrap_available",
    "container_probe",
    "executor_for",
    "sandbox_probe",
]


def sandbox_probe(setting: str | None = None) -> SandboxReport:
    """What this drone offers its builds, each probed for real: the sandbox (bwrap run once) and, as its
    `containers`, the container engine (a tiny local image run once)."""
    report = process_sandbox_probe(setting)
    return dataclasses.replace(report, containers=container_probe().as_dict())


def executor_for(name: str) -> Executor:
    """The executor called `name` (`process` or `container`)."""
    try:
        executor_class = EXECUTORS[name]
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; available: {', '.join(sorted(EXECUTORS))}") from None
    return executor_class()
