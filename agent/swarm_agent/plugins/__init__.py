"""Agent plugins: every module in this package that defines `plugin_factory(daemon)` is loaded by `swarm-agent run`.

A plugin is any object with:

    name: str
    async start() -> None                      # after registration, before the loops
    async stop() -> None                       # on shutdown / restart
    registration_fields() -> dict              # merged into the registration body (e.g. sandbox)
    heartbeat_fields() -> dict                 # merged into every heartbeat body (e.g. running_build_ids)
    async on_heartbeat_response(body: dict)    # the server's heartbeat answer (action, hook fields)
    async on_ws_message(message: dict) -> bool # True when it handled a WebSocket message
    async on_ws_binary(data: bytes) -> bool    # True when it handled a binary frame (terminal input)
    async on_ws_connected() -> None            # the WebSocket is (re)connected
    async on_ws_closed() -> None               # the WebSocket dropped

It may use `daemon.api` (httpx.AsyncClient on `<server>/api/v1` with the drone
token), `await daemon.send_ws(message)`, `await daemon.send_ws_binary(data)`,
`daemon.config` and `daemon.action`.
`AgentPlugin` below is a convenient base with no-op defaults.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil

import httpx

logger = logging.getLogger(__name__)


class AgentPlugin:
    """No-op defaults for the plugin interface; subclass and override what you need."""

    name = "plugin"

    def __init__(self, daemon):
        self.daemon = daemon

    async def start(self) -> None:
        """Called once the agent is registered."""

    def registration_fields(self) -> dict:
        """Fields this plugin adds to the registration body."""
        return {}

    async def stop(self) -> None:
        """Called when the agent stops or restarts."""

    def heartbeat_fields(self) -> dict:
        """Extra fields for the heartbeat body."""
        return {}

    async def on_heartbeat_response(self, body: dict) -> None:
        """The server's answer to a heartbeat."""

    async def on_ws_message(self, message: dict) -> bool:
        """A server message over the WebSocket; return True when handled."""
        return False

    async def on_ws_binary(self, data: bytes) -> bool:
        """A binary frame from the server; return True when handled."""
        return False

    async def on_ws_connected(self) -> None:
        """The WebSocket is up (again)."""

    async def on_ws_closed(self) -> None:
        """The WebSocket dropped; the daemon reconnects on its own."""


async def poll_forever(step, *, wakeup: asyncio.Event, interval, what: str, should_step=lambda: True) -> None:
    """Run `await step()` (True: it got work, go again at once) whenever `should_step()`, then wait.

    The wait ends after `interval()` seconds or when `wakeup` is set (a
    WebSocket nudge), whichever comes first. A failing step is logged and the
    loop goes on: the claim loops of builds and executions must survive anything.
    """
    while True:
        got_work = False
        if should_step():
            try:
                try:
                    got_work = await step()
                except httpx.TransportError as error:
                    # A kept-alive connection the server closed as it was reused (the poll interval and
                    # the server's keep-alive timeout are both about 5 s) is routine: try once more on a
                    # fresh connection, and warn only when that fails too.
                    logger.debug("%s: %s (%r), trying again", what, type(error).__name__, error)
                    got_work = await step()
            except httpx.HTTPError as error:
                logger.warning("%s failed: %s: %s", what, type(error).__name__, error)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                logger.exception("%s failed", what)
        if got_work:
            continue
        wakeup.clear()
        try:
            await asyncio.wait_for(wakeup.wait(), timeout=interval())
        except asyncio.TimeoutError:
            pass


def load_plugins(daemon, *, disabled: set[str] | None = None) -> list:
    """Instantiate every plugin module's `plugin_factory(daemon)` (sorted by module name)."""
    disabled = disabled or set()
    plugins = []
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if module_info.name in disabled:
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        factory = getattr(module, "plugin_factory", None)
        if factory is None:
            continue
        plugin = factory(daemon)
        if plugin is not None:
            logger.info("loaded agent plugin %s", getattr(plugin, "name", module_info.name))
            plugins.append(plugin)
    return plugins
