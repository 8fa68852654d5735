"""Agent plugin: terminals relayed over the agent's WebSocket (see swarm_agent.terminal).

Options of `swarm-agent run`: `--no-terminal` (refuse every session),
`--terminal-shell` (default: the account's login shell), `--terminal-user`
(when the agent runs as root: the account the shell runs as; default the
agent's own), `--terminal-max-sessions` (default 8).
"""
from __future__ import annotations

from swarm_agent.plugins import AgentPlugin
from swarm_agent.terminal import TerminalManager, TerminalSettings


class TerminalPlugin(AgentPlugin):
    """Routes terminal messages and frames to the session manager."""

    name = "terminal"

    def __init__(self, daemon):
        super().__init__(daemon)
        config = daemon.config
        self.manager = TerminalManager(
            TerminalSettings(enabled=config.terminal, shell=config.terminal_shell, user=config.terminal_user,
                             max_sessions=config.terminal_max_sessions),
            send_json=daemon.send_ws, send_binary=daemon.send_ws_binary)

    async def stop(self) -> None:
        await self.manager.close_all("agent stopping")

    async def on_ws_message(self, message: dict) -> bool:
        return await self.manager.on_message(message)

    async def on_ws_binary(self, data: bytes) -> bool:
        return await self.manager.on_binary(data)

    async def on_ws_closed(self) -> None:
        await self.manager.close_all("the agent's WebSocket dropped")


def plugin_factory(daemon) -> TerminalPlugin:
    """Entry point the agent's plugin loader calls."""
    return TerminalPlugin(daemon)
