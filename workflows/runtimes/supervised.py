"""Local runtimes whose executions belong to a detached supervisor (`swarm_agent.supervisor`).

`start()` writes the supervisor's spec (0600, in the execution's own 0700
directory), runs `python -m swarm_agent.supervisor --spec …`, which
double-forks into a session of its own and prints its pid and kernel start
time, and returns at once. Those go into `execution.runtime_state`, so any
worker on this host — the one that started it, or one started after every
worker died — finds the execution again: `is_alive()` and `cancel()` check
the pid against its start time (a reused pid is never signalled). The
supervisor reports the end itself (`runtime_exited`, with its own runtime
token), so nothing of an execution lives in a Celery worker.
"""
from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

from django.conf import settings

from swarm_agent.sandbox import SupervisorStartFailed, fresh_root, write_secret_file  # noqa: F401  (re-exported)
from swarm_agent.sandbox import launch_supervisor as launch_sandbox_supervisor
from swarm_agent.supervisor import STATE_FILE, is_running, kill_process_group
from workflows.runtimes.base import ExecutionRuntime, RuntimeStartFailed



def execution_root(execution) -> Path:
    """The execution's private directory on this host (workdir, logs, tokens, overlay)."""
    return Path(settings.SWARM_PROCESS_RUNTIME_DIR) / str(execution.pk)


def fresh_execution_root(execution) -> Path:
    """An empty, owner-only directory for the execution (a redelivered start begins from nothing)."""
    return fresh_root(execution_root(execution))


def runtime_report_url(execution) -> str:
    """Where the supervisor reports the end of the sandbox or VM."""
    return f"{settings.SWARM_PUBLIC_URL}/api/v1/executions/{execution.pk}/runtime-events"


def launch_supervisor(root: Path, spec: dict) -> dict:
    """Start the detached supervisor for `spec` (swarm_agent.sandbox); RuntimeStartFailed when it did not start."""
    try:
        return launch_sandbox_supervisor(root, spec)
    except SupervisorStartFailed as exc:
        raise RuntimeStartFailed(str(exc)) from exc


class SupervisedRuntime(ExecutionRuntime):
    """cancel / is_alive through the supervisor recorded in `runtime_state`."""

    def _on_this_host(self, execution) -> dict | None:
        state = execution.runtime_state or {}
        return state if state.get("host") == socket.gethostname() and state.get("supervisor_pid") else None

    def is_alive(self, execution) -> bool | None:
        state = self._on_this_host(execution)
        if state is None:
            return None
        return is_running(state["supervisor_pid"], state.get("supervisor_start_time"))

    def cancel(self, execution) -> None:
        state = self._on_this_host(execution)
        if state is None:
            return
        if is_running(state["supervisor_pid"], state.get("supervisor_start_time")):
            # The supervisor stops its sandbox or VM and reports how it ended.
            try:
                os.kill(state["supervisor_pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
            return
        # A supervisor killed outright leaves its child behind: stop it from here.
        try:
            child = json.loads((Path(state["root"]) / STATE_FILE).read_text())
        except (OSError, ValueError, KeyError):
            return
        if is_running(child.get("child_pid"), child.get("child_start_time")):
            kill_process_group(child["child_pid"])
