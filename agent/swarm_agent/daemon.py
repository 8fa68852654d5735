"""The drone daemon behind `swarm-agent run` (asyncio, no Django).

It registers with a join token (or reuses the drone token saved in the state
directory), heartbeats over HTTP on the server's interval, keeps one
WebSocket to `/ws/agent/` open with reconnects and jittered backoff, answers
`ping` with `pong`, and carries out `restart_service` / `hard_restart`.
Binary frames on the WebSocket are terminal I/O (swarm_agent.terminal).
HTTP heartbeats continue while the WebSocket is down. Features such as
builds plug in through `swarm_agent.plugins`.

Signals: SIGTERM/SIGINT stop; SIGUSR1 drops the WebSocket and keeps it down
(HTTP only, for diagnostics); SIGUSR2 brings it back.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets
from websockets.asyncio.client import connect as ws_connect

from swarm_agent import __version__
from swarm_agent.client import USER_AGENT
from swarm_agent.host_facts import MetricsSampler, detect_drone_type, host_identity, ssh_host_keys
from swarm_agent.plugins import load_plugins

logger = logging.getLogger("swarm_agent.daemon")

STATE_FILE = "agent.json"
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0


class RegistrationRefused(Exception):
    """The control plane refused the join token (revoked, expired, unknown)."""


@dataclass
class AgentConfig:
    """Everything `swarm-agent run` was told."""

    server: str
    state_dir: Path
    name: str
    join_token: str | None = None
    labels: list[str] = field(default_factory=list)
    capacity: int = 1
    work_dir: Path | None = None
    drone_type: str | None = None  # None: detect
    restart_command: str | None = None  # None: re-exec this agent
    hard_restart_command: str | None = None  # None: re-exec at once, no graceful stop
    websocket: bool = True
    disabled_plugins: set[str] = field(default_factory=set)
    terminal: bool = True  # False: refuse every terminal session (--no-terminal)
    terminal_shell: str | None = None  # None: the account's login shell
    terminal_user: str | None = None  # None: the agent's own account
    terminal_max_sessions: int = 8
    syslog_files: list[str] = field(default_factory=list)  # empty: the journal (journalctl -f) when there is one

    def __post_init__(self):
        self.server = self.server.rstrip("/")
        self.state_dir = Path(self.state_dir)
        if self.work_dir is None:
            self.work_dir = self.state_dir / "work"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.server.startswith("https://") else "ws"
        return f"{scheme}://{self.server.split('://', 1)[1]}/ws/agent/"


class AgentDaemon:
    """One running agent: registration, heartbeat loop, WebSocket loop and plugins."""

    def __init__(self, config: AgentConfig):
        self.config = config
        self.heartbeat_interval = 15.0
        self.ping_interval = 10.0
        self.action = "run"
        self.drone_id: int | None = None
        self.token: str | None = None
        self.api = httpx.AsyncClient(base_url=f"{config.server}/api/v1", headers={"User-Agent": USER_AGENT},
                                     timeout=30.0)
        self.plugins: list = []
        self.metrics = MetricsSampler(config.work_dir if Path(config.work_dir).exists() else config.state_dir)
        self._ws = None
        self._ws_enabled = asyncio.Event()
        if config.websocket:
            self._ws_enabled.set()
        self._stopping = asyncio.Event()
        self._exit_code = 0
        self._restart_mode: str | None = None
        self._tasks: list[asyncio.Task] = []

    # --- state ------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.config.state_dir / STATE_FILE

    def _load_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"server": self.config.server, "name": self.config.name, "drone_id": self.drone_id,
                       "token": self.token}, handle)
        os.replace(temporary, self.state_path)

    def _use_token(self, token: str) -> None:
        self.token = token
        self.api.headers["Authorization"] = f"Bearer {token}"

    # --- registration -----------------------------------------------------------------

    async def register(self) -> None:
        """Register with the join token; saves the drone token in the state directory."""
        if not self.config.join_token:
            raise RegistrationRefused("no saved drone token and no --join-token to register with")
        body = {"join_token": self.config.join_token, "name": self.config.name, **host_identity(),
                "drone_type": self.config.drone_type or detect_drone_type(), "labels": self.config.labels,
                "capacity": self.config.capacity, "version": __version__}
        for plugin in self.plugins:
            try:
                body.update(plugin.registration_fields())
            except Exception:  # noqa: BLE001 - a plugin must not stop the registration
                logger.exception("plugin %s registration_fields failed", getattr(plugin, "name", plugin))
        response = await self.api.post("/drones/register", json=body, headers={"Authorization": ""})
        if response.status_code in (401, 403):
            raise RegistrationRefused(f"registration refused: {response.text[:300]}")
        response.raise_for_status()
        answer = response.json()
        self.drone_id = answer["drone_id"]
        self._use_token(answer["token"])
        self._apply_intervals(answer)
        self._save_state()
        logger.info("registered as drone %s (id %s, type %s)", answer["name"], self.drone_id, answer["drone_type"])

    async def ensure_registered(self) -> None:
        """Reuse the saved token when it still works, else register (retrying while the server is away)."""
        state = self._load_state()
        if state.get("token") and state.get("server") == self.config.server and state.get("name") == self.config.name:
            self._use_token(state["token"])
            self.drone_id = state.get("drone_id")
            logger.info("reusing the saved drone token from %s", self.state_path)
            return
        delay = BACKOFF_INITIAL
        while not self._stopping.is_set():
            try:
                await self.register()
                return
            except (httpx.TransportError, httpx.HTTPStatusError) as error:
                logger.warning("registration failed (%s); retrying in %.1f s", error, delay)
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _apply_intervals(self, answer: dict) -> None:
        self.heartbeat_interval = float(answer.get("heartbeat_interval", self.heartbeat_interval))
        self.ping_interval = float(answer.get("ping_interval", self.ping_interval))

    # --- heartbeat --------------------------------------------------------------------

    def heartbeat_body(self) -> dict:
        """Metrics plus every plugin's heartbeat fields."""
        body = {"metrics": self.metrics.sample()}
        for plugin in self.plugins:
            try:
                body.update(plugin.heartbeat_fields())
            except Exception:  # noqa: BLE001 - a plugin must not stop the heartbeat
                logger.exception("plugin %s heartbeat_fields failed", getattr(plugin, "name", plugin))
        return body

    async def heartbeat_once(self) -> dict | None:
        """Send one heartbeat; re-registers when the token was rotated or revoked."""
        response = await self.api.post("/drones/heartbeat", json=self.heartbeat_body())
        if response.status_code in (401, 403, 404):
            logger.warning("heartbeat refused (%s); registering again", response.status_code)
            await self.register()
            return None
        response.raise_for_status()
        answer = response.json()
        self._apply_intervals(answer)
        if answer.get("action") != self.action:
            logger.info("server action: %s", answer.get("action"))
        self.action = answer.get("action", "run")
        for plugin in self.plugins:
            try:
                await plugin.on_heartbeat_response(answer)
            except Exception:  # noqa: BLE001
                logger.exception("plugin %s on_heartbeat_response failed", getattr(plugin, "name", plugin))
        if self.action == "stop":
            logger.info("the server asked this agent to stop")
            self.stop()
        return answer

    async def heartbeat_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.heartbeat_once()
            except RegistrationRefused as error:
                logger.error("%s; stopping", error)
                self._exit_code = 2
                self.stop()
                return
            except (httpx.HTTPError, ValueError) as error:
                logger.warning("heartbeat failed: %s", error)
            await self._sleep(self.heartbeat_interval)

    # --- WebSocket -----------------------------------------------------------------------

    @property
    def ws_connected(self) -> bool:
        return self._ws is not None

    async def send_ws(self, message: dict) -> bool:
        """Send a JSON message over the WebSocket; False when it is not connected."""
        connection = self._ws
        if connection is None:
            return False
        try:
            await connection.send(json.dumps(message))
            return True
        except websockets.ConnectionClosed:
            return False

    async def send_ws_binary(self, data: bytes) -> bool:
        """Send a binary frame (terminal output) over the WebSocket; False when it is not connected."""
        connection = self._ws
        if connection is None:
            return False
        try:
            await connection.send(data)
            return True
        except websockets.ConnectionClosed:
            return False

    async def _tell_plugins(self, hook: str) -> None:
        for plugin in self.plugins:
            try:
                await getattr(plugin, hook)()
            except Exception:  # noqa: BLE001 - one plugin must not stop the others
                logger.exception("plugin %s %s failed", getattr(plugin, "name", plugin), hook)

    async def websocket_loop(self) -> None:
        backoff = BACKOFF_INITIAL
        while not self._stopping.is_set():
            if not self._ws_enabled.is_set():
                await self._wait_any(self._ws_enabled.wait())
                continue
            try:
                async with ws_connect(self.config.ws_url, additional_headers={
                        "Authorization": f"Bearer {self.token}", "User-Agent": USER_AGENT},
                        open_timeout=15, ping_interval=20, ping_timeout=20, max_size=16 * 1024 * 1024) as connection:
                    self._ws = connection
                    backoff = BACKOFF_INITIAL
                    logger.info("WebSocket connected")
                    keys = ssh_host_keys()
                    if keys:  # lets the control plane pin this host's SSH keys (never trusted on first use there)
                        await self.send_ws({"type": "host_keys", "keys": keys})
                    await self._tell_plugins("on_ws_connected")
                    disabled = asyncio.ensure_future(self._wait_disabled())
                    try:
                        await self._read_messages(connection, disabled)
                    finally:
                        disabled.cancel()
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError) as error:
                logger.warning("WebSocket: %s", error)
            finally:
                was_connected, self._ws = self._ws is not None, None
                if was_connected:
                    await self._tell_plugins("on_ws_closed")
            if self._stopping.is_set():
                return
            delay = backoff * random.uniform(0.5, 1.5)  # jitter: a restarted server is not stampeded
            backoff = min(backoff * 2, BACKOFF_MAX)
            await self._sleep(delay)

    async def _wait_disabled(self) -> None:
        while self._ws_enabled.is_set():
            await asyncio.sleep(0.2)

    async def _read_messages(self, connection, disabled: asyncio.Future) -> None:
        while True:
            receive = asyncio.ensure_future(connection.recv())
            # Stopping cancels this coroutine, and closing the connection then ends the receive with
            # ConnectionClosed: its outcome is read here, or asyncio logs "Task exception was never
            # retrieved" with a traceback on every clean stop.
            receive.add_done_callback(_consume_outcome)
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                done, _ = await asyncio.wait({receive, stopping, disabled}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not receive.done():
                    receive.cancel()
            if receive not in done:
                await connection.close()
                return
            raw = receive.result()
            if isinstance(raw, bytes):
                await self.handle_binary(raw)
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                logger.warning("ignoring a non-JSON WebSocket message")
                continue
            if isinstance(message, dict):
                await self.handle_message(message)

    async def handle_message(self, message: dict) -> None:
        """Dispatch one server message: ping, restart commands, then plugins."""
        message_type = message.get("type")
        if message_type == "ping":
            await self.send_ws({"type": "pong", "id": message.get("id")})
            return
        if message_type in ("restart_service", "hard_restart"):
            await self.send_ws({"type": "command_result", "id": message.get("id"), "command": message_type,
                                "ok": True, "detail": "restarting"})
            await self.restart(hard=message_type == "hard_restart")
            return
        if message_type in ("hello", "error"):
            if message_type == "error":
                logger.warning("server says: %s", message)
            return
        for plugin in self.plugins:
            try:
                if await plugin.on_ws_message(message):
                    return
            except Exception:  # noqa: BLE001
                logger.exception("plugin %s failed on %s", getattr(plugin, "name", plugin), message_type)
        logger.info("unhandled server message type %r", message_type)

    async def handle_binary(self, data: bytes) -> None:
        """A binary frame from the server (terminal input): the first plugin that knows it takes it."""
        for plugin in self.plugins:
            try:
                if await plugin.on_ws_binary(data):
                    return
            except Exception:  # noqa: BLE001
                logger.exception("plugin %s failed on a binary frame", getattr(plugin, "name", plugin))

    # --- restarts ---------------------------------------------------------------------

    async def restart(self, *, hard: bool) -> None:
        """restart_service / hard_restart: run the configured command, or re-exec this agent."""
        command = self.config.hard_restart_command if hard else self.config.restart_command
        if command:
            logger.warning("%s: running %s", "hard_restart" if hard else "restart_service", command)
            # Its own session: the command may well kill this process.
            subprocess.Popen(command, shell=True, start_new_session=True)  # noqa: S602 - operator-configured
            return
        self._restart_mode = "hard" if hard else "graceful"
        if hard:
            self._reexec()
        self.stop()

    def _reexec(self) -> None:
        logger.warning("re-executing the agent")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "swarm_agent.cli_agent", *sys.argv[1:]])

    # --- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Ask every loop to finish."""
        self._stopping.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGUSR1, self._ws_enabled.clear)
        loop.add_signal_handler(signal.SIGUSR2, self._ws_enabled.set)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            pass

    async def _wait_any(self, awaitable) -> None:
        waiter = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()

    async def run(self) -> int:
        """Run until stopped; returns the process exit code (re-execs on restart_service)."""
        self._install_signals()
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        Path(self.config.work_dir).mkdir(parents=True, exist_ok=True)
        try:
            await self.ensure_registered()
            if self._stopping.is_set():
                return self._exit_code
            # A first heartbeat before anything else: validates a saved token (re-registering if needed).
            try:
                await self.heartbeat_once()
            except (httpx.HTTPError, ValueError) as error:
                logger.warning("first heartbeat failed: %s", error)
            self.plugins = load_plugins(self, disabled=self.config.disabled_plugins)
            for plugin in self.plugins:
                await plugin.start()
            self._tasks = [asyncio.ensure_future(self.heartbeat_loop()),
                           asyncio.ensure_future(self.websocket_loop())]
            await self._stopping.wait()
        except RegistrationRefused as error:
            logger.error("%s", error)
            return 2
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for plugin in self.plugins:
                try:
                    await plugin.stop()
                except Exception:  # noqa: BLE001
                    logger.exception("plugin %s failed to stop", getattr(plugin, "name", plugin))
            await self.api.aclose()
        if self._restart_mode == "graceful":
            self._reexec()
        return self._exit_code


def _consume_outcome(task: asyncio.Future) -> None:
    """Mark a finished task's exception as seen (it is expected: the connection is being closed)."""
    if not task.cancelled():
        task.exception()
