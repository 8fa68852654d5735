"""The `process` runtime: `swarm-agent boot` as a local, sandboxed process group.

With bubblewrap (`bwrap`) on PATH the boot runs in a sandbox: the system
directories and the Python environment bound read-only, a private /tmp,
/proc and /dev, new pid/ipc/uts namespaces, every capability dropped, a new session, the bundle
cache and a fresh per-execution workdir (at /opt/workflow) the only
writable places, and `--die-with-parent`. Without bwrap it is a plain
subprocess in its own session, and a warning is logged for every start.

Network (`SWARM_PROCESS_NETWORK=isolated`, the default, with bwrap): the
sandbox gets its own network namespace (`--unshare-net`: loopback only) and
unix sockets relayed to exactly two endpoints — the control plane and the
bundle store (see `relay.py`). With `host` it shares the worker's network.

The Celery task returns as soon as the execution's detached supervisor
(`swarm_agent.supervisor`, see `supervised.py`) has started: it holds the
relays, runs the sandbox, keeps `boot.log`, and reports a boot that died
without reporting its own exit. Workers, beat and web servers can all
restart meanwhile; the execution runs on.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings

from bundles.downloads import bundle_download_url
from swarm_agent.relay import distinct_endpoints
from swarm_agent.sandbox import bwrap_argv, process_spec  # noqa: F401  (bwrap_argv: tests build it from here)
from workflows.runtimes.base import RuntimeStartFailed, register_runtime
from workflows.runtimes.supervised import SupervisedRuntime, fresh_execution_root, launch_supervisor, runtime_report_url
from workflows.services.runtime_reports import runtime_token_issue, supervisor_deadline_seconds

logger = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 3.0


def sandbox_mode() -> str:
    """`bwrap` when bubblewrap is used for new executions, else `none`."""
    wanted = settings.SWARM_PROCESS_SANDBOX
    if wanted == "none":
        return "none"
    if shutil.which("bwrap"):
        return "bwrap"
    if wanted == "bwrap":
        raise RuntimeStartFailed("SWARM_PROCESS_SANDBOX=bwrap but bubblewrap (bwrap) is not installed")
    return "none"


@register_runtime("process")
class ProcessRuntime(SupervisedRuntime):
    """Runs the boot as a local process group, in bubblewrap when available, owned by a supervisor.

    The spec is `swarm_agent.sandbox.process_spec`, the same a drone builds for
    a `drone`-runtime execution.
    """

    def start(self, execution, metadata_url: str, token: str) -> dict:
        mode = sandbox_mode()
        root = fresh_execution_root(execution)
        if mode != "bwrap":
            logger.warning(
                "bubblewrap (bwrap) is not installed: execution %s runs as a plain, UNSANDBOXED subprocess",
                execution.pk,
            )
        isolated = mode == "bwrap" and settings.SWARM_PROCESS_NETWORK == "isolated"
        endpoints = (distinct_endpoints([metadata_url, bundle_download_url(execution.version.bundle)])
                     if isolated else None)
        spec = process_spec(
            root=root, execution_id=execution.pk, metadata_url=metadata_url, token=token,
            runtime_token=runtime_token_issue(execution=execution), report_url=runtime_report_url(execution),
            deadline_seconds=supervisor_deadline_seconds(execution=execution),
            cache_dir=Path(settings.SWARM_PROCESS_CACHE_DIR), cache_budget_mb=settings.SWARM_PROCESS_CACHE_BUDGET_MB,
            sandbox=mode, endpoints=endpoints,
        )
        state = launch_supervisor(root, spec)
        state.update(sandbox=mode, network="isolated" if isolated else "host", workdir=spec["workdir"],
                     log=spec["log"])
        return state
