"""Pluggable execution runtimes: where `swarm-agent boot` runs for an execution.

A runtime receives only a metadata URL and a per-execution token; everything
else (bundle URL and hash, env, secrets) the boot script fetches itself.
Runtimes register by name (`@register_runtime("process")`, `"microvm"`); the
drone runtime of a later issue plugs in the same way. See
`base.ExecutionRuntime`; the local runtimes hand each execution to a detached
supervisor (`supervised.py`).
"""
from workflows.runtimes.base import (
    ExecutionRuntime,
    RuntimeAvailability,
    RuntimeStartFailed,
    RuntimeUnavailable,
    get_runtime,
    register_runtime,
    runtime_names,
)

__all__ = ["ExecutionRuntime", "RuntimeAvailability", "RuntimeStartFailed", "RuntimeUnavailable", "get_runtime",
           "register_runtime", "runtime_names"]
