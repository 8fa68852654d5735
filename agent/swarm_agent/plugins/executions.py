"""Agent plugin: hosts `drone`-runtime executions (`swarm-agent run`).

* `execution_available` over the WebSocket (a queued execution this drone's
  labels fit) → with a free slot, claim it over the WebSocket
  (`execution_claim`); the server answers `execution_start` (the metadata URL,
  the execution's own short-lived tokens, the endpoints its sandbox may reach)
  or `execution_taken` (another drone was first);
* the poll, `POST /executions/request` every SWARM_AGENT_EXECUTION_POLL_INTERVAL
  seconds (default 5): reports the executions running here (which renews
  their leases), stops those the server says are over or not this drone's,
  and claims one when a slot is free — the way in when the WebSocket is down;
* `execution_start` → the same boot as the control plane's `process` runtime
  (swarm_agent/sandbox.py): bubblewrap when present, network only to the
  control plane and the bundle store, owned by a detached
  `swarm_agent.supervisor` that reports how it ended;
* `execution_cancel` → SIGTERM that supervisor (it stops the sandbox).

The supervisors outlive this agent: a restarted agent finds them again in
`<state>/executions.json` and keeps renewing their leases; an agent that never
comes back lets the leases run out and the control plane fails them
`drone_lost`. Settings (environment): SWARM_AGENT_EXECUTION_POLL_INTERVAL,
SWARM_AGENT_EXECUTION_SANDBOX (`auto` or `none`), SWARM_AGENT_EXECUTION_CACHE_DIR.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
from pathlib import Path

from swarm_agent.plugins import AgentPlugin, poll_forever
from swarm_agent.sandbox import SupervisorStartFailed, fresh_root, launch_supervisor, process_spec
from swarm_agent.supervisor import is_running

logger = logging.getLogger(__name__)

STATE_FILE = "executions.json"


class ExecutionsPlugin(AgentPlugin):
    """Claims drone-runtime executions up to the drone's capacity and boots them under supervisors."""

    name = "executions"

    def __init__(self, daemon):
        super().__init__(daemon)
        config = daemon.config
        self.poll_interval = float(os.environ.get("SWARM_AGENT_EXECUTION_POLL_INTERVAL", "5"))
        self.root_dir = Path(config.work_dir) / "executions"
        self.cache_dir = Path(os.environ.get("SWARM_AGENT_EXECUTION_CACHE_DIR") or Path(config.state_dir) / "cache")
        wanted = os.environ.get("SWARM_AGENT_EXECUTION_SANDBOX", "auto")
        self.sandbox = "bwrap" if wanted != "none" and shutil.which("bwrap") else "none"
        self.state_path = Path(config.state_dir) / STATE_FILE
        self.running: dict[int, dict] = self._load()
        self._claiming: set[int] = set()
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task | None = None

    # --- state -------------------------------------------------------------------

    def _load(self) -> dict[int, dict]:
        try:
            return {int(key): value for key, value in json.loads(self.state_path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save(self) -> None:
        part = self.state_path.with_suffix(".part")
        part.write_text(json.dumps({str(key): value for key, value in self.running.items()}))
        os.replace(part, self.state_path)

    def running_ids(self) -> list[int]:
        """Executions whose supervisor still runs here (the ones that ended are forgotten)."""
        ended = [pk for pk, state in self.running.items()
                 if not is_running(state.get("supervisor_pid"), state.get("supervisor_start_time"))]
        for pk in ended:
            self.running.pop(pk, None)
        if ended:
            self._save()
            self._wakeup.set()
        return sorted(self.running)

    @property
    def free_slots(self) -> int:
        return max(int(self.daemon.config.capacity or 1), 1) - len(self.running_ids()) - len(self._claiming)

    # --- plugin interface ----------------------------------------------------------

    async def start(self) -> None:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        if self.running:
            logger.info("found executions %s still running under their supervisors", self.running_ids())
        self._loop_task = asyncio.ensure_future(self._poll_loop())

    async def stop(self) -> None:
        # The executions stay with their supervisors: a restarted agent picks them up again.
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def on_ws_message(self, message: dict) -> bool:
        kind = message.get("type")
        if kind == "execution_available":
            execution_id = message.get("execution_id")
            if self.daemon.action == "run" and self.free_slots > 0 and isinstance(execution_id, int) \
                    and execution_id not in self._claiming:
                self._claiming.add(execution_id)
                sent = await self.daemon.send_ws({"type": "execution_claim", "execution_id": execution_id,
                                                  "sandbox": self.sandbox})
                if not sent:
                    self._claiming.discard(execution_id)
                    self._wakeup.set()
            return True
        if kind == "execution_start":
            self._claiming.discard(message.get("execution_id"))
            await self._launch(message)
            return True
        if kind == "execution_taken":
            self._claiming.discard(message.get("execution_id"))
            return True
        if kind == "execution_cancel":
            self._stop_execution(int(message.get("execution_id") or 0))
            return True
        return False

    async def on_ws_closed(self) -> None:
        self._claiming.clear()

    # --- the poll ----------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        # Always polls (not only with a free slot): the poll also renews the running executions' leases.
        await poll_forever(self._poll_once, wakeup=self._wakeup, interval=lambda: self.poll_interval,
                           what="execution poll")

    async def _poll_once(self) -> bool:
        free = self.free_slots if self.daemon.action == "run" else 0
        response = await self.daemon.api.post("/executions/request", json={
            "free_slots": max(free, 0), "running_execution_ids": self.running_ids(), "sandbox": self.sandbox})
        if response.status_code != 200:
            logger.warning("execution poll refused: %s %s", response.status_code, response.text[:200])
            return False
        answer = response.json()
        for execution_id in answer.get("stop_execution_ids") or []:
            self._stop_execution(int(execution_id))
        if answer.get("execution"):
            await self._launch(answer["execution"])
            return True
        return False

    # --- one execution ------------------------------------------------------------------

    async def _launch(self, payload: dict) -> None:
        execution_id = int(payload["execution_id"])
        if execution_id in self.running:
            return
        try:
            state = await asyncio.to_thread(self._start_supervisor, execution_id, payload)
        except (OSError, SupervisorStartFailed) as error:
            # Nothing runs: the lease is never renewed and the control plane fails it (drone_lost).
            logger.error("execution %s could not start: %s", execution_id, error)
            return
        self.running[execution_id] = state
        self._save()
        logger.info("execution %s started (sandbox %s, supervisor %s)", execution_id, self.sandbox,
                    state["supervisor_pid"])

    def _start_supervisor(self, execution_id: int, payload: dict) -> dict:
        root = fresh_root(self.root_dir / str(execution_id))
        spec = process_spec(
            root=root, execution_id=execution_id, metadata_url=payload["metadata_url"], token=payload["token"],
            runtime_token=payload["runtime_token"], report_url=payload["report_url"],
            deadline_seconds=int(payload["deadline_seconds"]), cache_dir=self.cache_dir,
            cache_budget_mb=int(payload.get("cache_budget_mb") or 2048), sandbox=self.sandbox,
            endpoints=[tuple(endpoint) for endpoint in payload["endpoints"]] if self.sandbox == "bwrap" else None,
        )
        return launch_supervisor(root, spec)

    def _stop_execution(self, execution_id: int) -> None:
        state = self.running.get(execution_id)
        if state and is_running(state.get("supervisor_pid"), state.get("supervisor_start_time")):
            logger.info("stopping execution %s (supervisor %s)", execution_id, state["supervisor_pid"])
            try:
                os.kill(state["supervisor_pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass


def plugin_factory(daemon) -> ExecutionsPlugin:
    """Entry point the agent's plugin loader calls."""
    return ExecutionsPlugin(daemon)
