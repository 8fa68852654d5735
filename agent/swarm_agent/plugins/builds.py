"""Agent plugin: claims builds and runs them (`swarm-agent run`).

* claims with `POST /builds/request {free_slots, labels}` while it has free
  slots: 201 → run it, 204 → wait for the poll interval or for the server's
  `build_available` WebSocket nudge, whichever comes first;
* `cancel_build` over the WebSocket, `cancel_build_ids` in a heartbeat answer,
  `Swarm-Canceling-Builds` on a claim answer or `Job-Status` on any build
  call all stop a running build;
* heartbeats carry `running_build_ids` (which renews their leases).

Settings (environment): SWARM_AGENT_BUILD_POLL_INTERVAL (seconds, default 5),
SWARM_AGENT_BUILD_EXECUTOR (default `process`), SWARM_AGENT_BUILD_SANDBOX
(`bubblewrap`, the default, or the explicit opt-out `none`),
SWARM_AGENT_KEEP_WORKSPACES=1 to keep workspaces.

The sandbox this drone offers (`sandbox_probe`, bwrap run for real, and with
it the container engine, a tiny local image run for real) goes to
the control plane in the registration body and in the first heartbeat after
the agent starts, then again whenever a re-probe (every
SWARM_AGENT_SANDBOX_PROBE_INTERVAL seconds, default 600, in a thread) finds it changed:
the drone's record shows it, and only a drone that offers a sandbox is
handed a job that needs one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

from swarm_agent.builds.executors import sandbox_probe
from swarm_agent.builds.runner import BuildRunner
from swarm_agent.plugins import AgentPlugin, poll_forever

logger = logging.getLogger(__name__)


class BuildsPlugin(AgentPlugin):
    """Claims and runs builds up to the drone's capacity."""

    name = "builds"

    def __init__(self, daemon):
        super().__init__(daemon)
        self.poll_interval = float(os.environ.get("SWARM_AGENT_BUILD_POLL_INTERVAL", "5"))
        self.runners: dict[int, BuildRunner] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self.sandbox = sandbox_probe()
        self._sandbox_unsent = True
        self._sandbox_probe_interval = float(os.environ.get("SWARM_AGENT_SANDBOX_PROBE_INTERVAL", "600"))
        self._sandbox_probed_at = time.monotonic()
        self._reprobe: asyncio.Future | None = None
        logger.info("build sandbox: %s (%s); containers: %s", self.sandbox.mode, self.sandbox.detail,
                    self.sandbox.containers)

    @property
    def capacity(self) -> int:
        return max(int(self.daemon.config.capacity or 1), 1)

    async def start(self) -> None:
        self._loop_task = asyncio.ensure_future(self._claim_loop())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        # A graceful stop reports running builds as lost so they are retried at once.
        for runner in list(self.runners.values()):
            runner.request_stop("agent_stopping")
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=30)

    def registration_fields(self) -> dict:
        return {"sandbox": self.sandbox.as_dict()}

    def heartbeat_fields(self) -> dict:
        fields: dict = {"running_build_ids": sorted(self.runners)}
        if time.monotonic() - self._sandbox_probed_at >= self._sandbox_probe_interval and self._reprobe is None:
            # In a thread: the container probe runs an image (most of a second, up to its timeouts), which
            # the event loop, with every build's log streaming on it, must not wait for.
            self._sandbox_probed_at = time.monotonic()
            self._reprobe = asyncio.ensure_future(asyncio.to_thread(sandbox_probe))
        if self._reprobe is not None and self._reprobe.done():
            reprobe, self._reprobe = self._reprobe, None
            probed = None if reprobe.cancelled() or reprobe.exception() else reprobe.result()
            if probed is not None and probed != self.sandbox:
                logger.warning("build sandbox changed: %s (%s; containers: %s)", probed.mode, probed.detail,
                               probed.containers)
                self.sandbox, self._sandbox_unsent = probed, True
        if self._sandbox_unsent:
            # Only until a heartbeat carrying it is answered: the heartbeat stays the cheap one otherwise.
            fields["sandbox"] = self.sandbox.as_dict()
        return fields

    async def on_heartbeat_response(self, body: dict) -> None:
        if body.get("sandbox_recorded"):
            self._sandbox_unsent = False
        for build_id in body.get("cancel_build_ids") or []:
            self._cancel(int(build_id), "canceled")

    async def on_ws_message(self, message: dict) -> bool:
        kind = message.get("type")
        if kind == "build_available":
            self._wakeup.set()
            return True
        if kind == "cancel_build":
            reason = "job_execution_timeout" if message.get("reason") == "job_execution_timeout" else "canceled"
            self._cancel(int(message.get("build_id") or 0), reason)
            return True
        return False

    def _cancel(self, build_id: int, reason: str) -> None:
        runner = self.runners.get(build_id)
        if runner is not None:
            runner.request_stop(reason)

    async def _claim_loop(self) -> None:
        await poll_forever(self._claim_once, wakeup=self._wakeup, interval=lambda: self.poll_interval,
                           what="build claim",
                           should_step=lambda: self.daemon.action == "run" and len(self.runners) < self.capacity)

    async def _claim_once(self) -> bool:
        free = self.capacity - len(self.runners)
        response = await self.daemon.api.post("/builds/request",
                                              json={"free_slots": free, "labels": self.daemon.config.labels})
        for build_id in filter(None, response.headers.get("Swarm-Canceling-Builds", "").split(",")):
            self._cancel(int(build_id), "canceled")
        if response.status_code == 204:
            return False
        if response.status_code != 201:
            logger.warning("build claim refused: %s %s", response.status_code, response.text[:200])
            return False
        spec = response.json()
        build_id = int(spec["id"])
        runner = BuildRunner(api=self.daemon.api, spec=spec, work_dir=self.daemon.config.work_dir,
                             drone_name=self.daemon.config.name)
        self.runners[build_id] = runner
        logger.info("claimed build %s (attempt %s)", build_id, spec.get("attempt"))
        self._tasks[build_id] = asyncio.ensure_future(self._run(build_id, runner))
        return True

    async def _run(self, build_id: int, runner: BuildRunner) -> None:
        try:
            state = await runner.run()
            logger.info("build %s done: %s", build_id, state)
        except Exception:  # noqa: BLE001
            logger.exception("build %s crashed in the agent", build_id)
        finally:
            self.runners.pop(build_id, None)
            self._tasks.pop(build_id, None)
            self._wakeup.set()


def plugin_factory(daemon) -> BuildsPlugin:
    """Entry point the agent's plugin loader calls."""
    return BuildsPlugin(daemon)
