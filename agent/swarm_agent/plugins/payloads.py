"""Agent plugin: payloads (`deploy_payload` over the WebSocket, HTTP poll while it is down, `payload_hashes`).

* `deploy_payload` (WebSocket, or `GET /payloads/agent/pending` while the
  socket is down and once at start) → `swarm_agent.payloads.install` in a
  thread, one deploy per payload type at a time, deduplicated by target id
  (the server re-sends until it hears back);
* every state goes to `POST /payloads/agent/report` (coalesced, retried);
* every heartbeat carries `payload_hashes` (type → the sha256 of what is
  really installed, see `swarm_agent.payloads.tree`);
* payload type `swarm-agent`: the agent upgrades itself
  (`swarm_agent.payloads.selfupgrade`).

Settings (environment): SWARM_AGENT_PAYLOAD_ROOT (default
`<state-dir>/payloads`), SWARM_AGENT_PAYLOAD_CACHE (default
`<state-dir>/cache`), SWARM_AGENT_PAYLOAD_POLL_INTERVAL (seconds, default 5).
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

import httpx

from swarm_agent.payloads.install import PayloadInstaller
from swarm_agent.payloads.reporter import Reporter
from swarm_agent.payloads.selfupgrade import (
    AGENT_TYPE,
    mark_upgrade,
    pending_confirmation,
    restart_into_upgrade,
    stage_agent_upgrade,
)
from swarm_agent.payloads.tree import TreeVerifier
from swarm_agent.plugins import AgentPlugin

logger = logging.getLogger(__name__)

REMEMBERED_TARGETS = 512


class PayloadsPlugin(AgentPlugin):
    """Applies payload deploys and reports what is installed."""

    name = "payloads"

    def __init__(self, daemon, *, payload_root: Path | None = None, cache_dir: Path | None = None,
                 poll_interval: float | None = None, agent_argv: list[str] | None = None):
        super().__init__(daemon)
        state_dir = Path(daemon.config.state_dir)
        root = payload_root or Path(os.environ.get("SWARM_AGENT_PAYLOAD_ROOT") or state_dir / "payloads")
        cache = cache_dir or Path(os.environ.get("SWARM_AGENT_PAYLOAD_CACHE") or state_dir / "cache")
        self.installer = PayloadInstaller(payload_root=root, cache_dir=cache)
        self.verifier = TreeVerifier()
        self.reporter = Reporter(daemon.api)
        self.poll_interval = poll_interval or float(os.environ.get("SWARM_AGENT_PAYLOAD_POLL_INTERVAL", "5"))
        self.agent_argv = agent_argv if agent_argv is not None else sys.argv[1:]
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._seen: OrderedDict[tuple[int, str], dict | None] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self._restarting = False

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self._confirm_agent_upgrade()
        self._poller = asyncio.ensure_future(self._poll_loop())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        await self.reporter.close()

    # --- heartbeat ---------------------------------------------------------------------

    def heartbeat_fields(self) -> dict:
        hashes = {}
        for payload_type, directory in self.installer.installed_types().items():
            sha256 = self.installer.current_sha256(directory)
            if sha256:
                hashes[payload_type] = self.verifier.reported_hash(directory / "releases", sha256)
        return {"payload_hashes": hashes} if hashes else {}

    # --- commands ---------------------------------------------------------------------

    async def on_ws_message(self, message: dict) -> bool:
        if message.get("type") != "deploy_payload":
            return False
        self.accept(message)
        return True

    def accept(self, command: dict) -> None:
        """Start applying a command unless it is running or done (then its final state is reported again)."""
        key = (int(command.get("target_id") or 0), command.get("action") or "deploy")
        if key in self._seen:
            final = self._seen[key]
            if final is not None:
                self.reporter.push(key[0], key[1], final["state"], final["reason"], final["current_sha256"])
            return
        self._seen[key] = None
        while len(self._seen) > REMEMBERED_TARGETS:
            self._seen.popitem(last=False)
        task = asyncio.ensure_future(self._apply(key, command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, key: tuple[int, str], command: dict) -> None:
        loop = asyncio.get_running_loop()
        target_id, action = key

        def report(state: str, reason: str = "") -> None:
            loop.call_soon_threadsafe(self.reporter.push, target_id, action, state, reason, "")

        payload_type = str(command.get("payload_type") or "")
        async with self._locks[payload_type]:
            try:
                if payload_type == AGENT_TYPE or command.get("restarts_agent"):
                    result = await asyncio.to_thread(stage_agent_upgrade, self.installer, command, report,
                                                     agent_argv=self.agent_argv)
                else:
                    result = await asyncio.to_thread(self.installer.apply, command, report)
            except Exception as error:  # noqa: BLE001 - a bug must still end in a report
                logger.exception("deploy of target %s crashed", target_id)
                from swarm_agent.payloads.install import ApplyResult

                result = ApplyResult(False, f"agent error: {error!r}", "")
        if result.restart_agent:
            # The new agent reports `succeeded` itself once it runs; this one says it is restarting.
            await self.reporter.flush(timeout=10)
            self._restarting = True
            directory = self.installer.type_dir(payload_type, command.get("install_root") or "")
            restart_into_upgrade(self.daemon, directory)
            return
        state = "succeeded" if result.ok else "failed"
        self._seen[key] = {"state": state, "reason": result.reason, "current_sha256": result.current_sha256}
        logger.info("payload %s target %s (%s): %s %s", payload_type, target_id, action, state, result.reason)
        self.reporter.push(target_id, action, state, result.reason, result.current_sha256)

    async def _confirm_agent_upgrade(self) -> None:
        directory = self.installer.installed_types().get(AGENT_TYPE) or self.installer.type_dir(AGENT_TYPE)
        upgrade = pending_confirmation(directory)
        if upgrade is None or not upgrade.get("target_id"):
            return
        action = upgrade.get("action") or "deploy"
        if upgrade["status"] == "pending":
            states = [{"state": "succeeded", "reason": "the new agent is running and reached the control plane"}]
            if await self.reporter.send_now(upgrade["target_id"], action, states,
                                            current_sha256=upgrade.get("new_sha256") or ""):
                mark_upgrade(directory, upgrade, "confirmed")
                logger.info("agent upgrade to %s confirmed", (upgrade.get("new_sha256") or "")[:12])
            return
        states = [{"state": "failed", "reason": f"rolled back by the launcher: {upgrade.get('reason')}"}]
        if await self.reporter.send_now(upgrade["target_id"], action, states,
                                        current_sha256=upgrade.get("previous_sha256") or ""):
            mark_upgrade(directory, upgrade, "failure_reported")

    async def _poll_loop(self) -> None:
        """Fetch waiting commands once at start, then whenever the WebSocket is down."""
        first = True
        while True:
            if first or not getattr(self.daemon, "ws_connected", False):
                try:
                    response = await self.daemon.api.get("/payloads/agent/pending")
                    if response.status_code == 200:
                        for command in response.json().get("commands", []):
                            self.accept(command)
                except (httpx.HTTPError, ValueError) as error:
                    logger.debug("payload poll failed: %s", error)
                first = False
            await asyncio.sleep(self.poll_interval)


def plugin_factory(daemon) -> PayloadsPlugin:
    """Entry point the agent's plugin loader calls."""
    return PayloadsPlugin(daemon)
