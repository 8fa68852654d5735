"""Agent plugin: the drone's system log for the admin's viewer (see swarm_agent.syslog)."""
from __future__ import annotations

from swarm_agent.plugins import AgentPlugin
from swarm_agent.syslog import SyslogManager


class SyslogPlugin(AgentPlugin):
    """Routes `syslog_open` / `syslog_close` to the tails."""

    name = "syslog"

    def __init__(self, daemon):
        super().__init__(daemon)
        self.manager = SyslogManager(daemon.config.syslog_files, send_json=daemon.send_ws)

    async def stop(self) -> None:
        await self.manager.close_all()

    async def on_ws_message(self, message: dict) -> bool:
        return await self.manager.on_message(message)

    async def on_ws_closed(self) -> None:
        await self.manager.close_all()


def plugin_factory(daemon) -> SyslogPlugin:
    """Entry point the agent's plugin loader calls."""
    return SyslogPlugin(daemon)
