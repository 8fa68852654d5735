"""The runtime interface and its registry.

Contract for a runtime (`ExecutionRuntime` subclass):

* `start(execution, metadata_url, token) -> dict` launches `swarm-agent boot`
  somewhere with `SWARM_METADATA_URL` and the token (`SWARM_METADATA_TOKEN`, or
  a `SWARM_METADATA_TOKEN_FILE` the boot deletes once read) and returns
  quickly (it must not hold a Celery worker for the execution's life). The
  returned JSON-able dict is stored as `execution.runtime_state` and handed
  back to `cancel()` / `is_alive()` — it is how the runtime finds its work
  again from any worker. Raise `RuntimeStartFailed` when nothing was started.
* `cancel(execution)` kills everything the execution started (the whole
  process group / VM). Idempotent: cancelling a finished one is a no-op.
* `is_alive(execution) -> bool | None` answers whether the boot is still
  running, or None when this worker cannot tell (another host).
* `claims_later` / `enqueue(execution)`: a runtime whose executions are
  claimed by workers of its own (drones) queues them instead of starting
  them; `sweep()` is its share of beat's reaper.
* `availability() -> RuntimeAvailability` says whether executions can start
  here now and what the runtime runs on (e.g. the microVM's accelerator), for
  `/readyz` and the spawn check; `check_spawn(workflow)` raises
  `RuntimeUnavailable` when this workflow cannot start (the API's 422).

The boot script reports status itself through the API, so a runtime never
has to translate exit codes; it only reports a boot that died silently.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from django.conf import settings

_RUNTIMES: dict[str, type["ExecutionRuntime"]] = {}
# Modules that register built-in runtimes on import.
_BUILTIN_MODULES = ("workflows.runtimes.process", "workflows.runtimes.microvm", "workflows.runtimes.drone")


class RuntimeStartFailed(Exception):
    """The runtime could not start the boot; nothing is running."""


class RuntimeUnavailable(Exception):
    """This runtime cannot start this execution here (`code` names why; `field` the workflow field at fault)."""

    def __init__(self, reason: str, *, code: str = "runtime_unavailable", field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.field = field


@dataclass(frozen=True)
class RuntimeAvailability:
    """Whether a runtime can start executions on this host, why not, and what it runs on."""

    available: bool
    reason: str = ""
    details: dict = field(default_factory=dict)


class ExecutionRuntime(ABC):
    """Where and how an execution's boot script runs."""

    name: str = ""
    #: True for a runtime whose executions wait `queued` until a worker of its own claims them (the drone
    #: runtime): provisioning then calls `enqueue()` instead of issuing a token and calling `start()`.
    claims_later: bool = False

    @abstractmethod
    def start(self, execution, metadata_url: str, token: str) -> dict:
        """Launch the boot for `execution`; return the state `cancel()` needs."""

    @abstractmethod
    def cancel(self, execution) -> None:
        """Kill whatever runs for `execution` (all of its processes)."""

    def is_alive(self, execution) -> bool | None:
        """Whether the boot still runs; None when unknown from here."""
        return None

    def enqueue(self, execution) -> None:
        """Queue a row-locked pending execution for a later claim (only when `claims_later`)."""
        raise NotImplementedError(f"the {self.name} runtime starts executions itself")

    def sweep(self) -> dict:
        """Beat's periodic work for this runtime (with the reaper); returns counts for the task's result."""
        return {}

    def availability(self) -> RuntimeAvailability:
        """Whether executions can start here (cheap: never boots anything)."""
        return RuntimeAvailability(True)

    def check_spawn(self, workflow) -> None:
        """Raise RuntimeUnavailable when `workflow` cannot run on this runtime here."""
        availability = self.availability()
        if not availability.available:
            raise RuntimeUnavailable(f"the {self.name} runtime is unavailable: {availability.reason}")


def register_runtime(name: str):
    """Class decorator registering a runtime under `name`."""

    def decorator(cls: type[ExecutionRuntime]) -> type[ExecutionRuntime]:
        cls.name = name
        _RUNTIMES[name] = cls
        return cls

    return decorator


def _load_builtins() -> None:
    for module in (*_BUILTIN_MODULES, *getattr(settings, "SWARM_EXTRA_RUNTIME_MODULES", ())):
        importlib.import_module(module)


def runtime_names() -> list[str]:
    """Names of every registered runtime."""
    _load_builtins()
    return sorted(_RUNTIMES)


def get_runtime(name: str) -> ExecutionRuntime:
    """An instance of the runtime registered as `name` (KeyError when unknown)."""
    _load_builtins()
    return _RUNTIMES[name]()
