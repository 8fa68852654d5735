"""Build executors: the interface (`base`), the `process` executor, and the lookup by name.

`base` imports nothing of the executors and every executor imports only
`base`, so that adding one (a container executor, say) cannot close an
import cycle; this package is the one place that knows them all.
"""
from __future__ import annotations

from swarm_agent.builds.executors.base import Executor, OutputCallback, StepResult
from swarm_agent.builds.executors.process import (
    ProcessExecutor,
    SandboxReport,
    SandboxUnavailable,
    bubblewrap_available,
    sandbox_probe,
)

#: Executors by the name `SWARM_AGENT_BUILD_EXECUTOR` gives.
EXECUTORS: dict[str, type[Executor]] = {ProcessExecutor.name: ProcessExecutor}

__all__ = [
    "EXECUTORS",
    "Executor",
    "OutputCallback",
    "ProcessExecutor",
    "SandboxReport",
    "SandboxUnavailable",
    "StepResult",
    "bubblewrap_available",
    "executor_for",
    "sandbox_probe",
]


def executor_for(name: str) -> Executor:
    """The executor called `name` (only `process` ships)."""
    try:
        executor_class = EXECUTORS[name]
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; available: {', '.join(sorted(EXECUTORS))}") from None
    return executor_class()
