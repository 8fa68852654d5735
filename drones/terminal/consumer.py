"""`/ws/terminal/<drone>/`: a browser's terminal on a drone. Authenticates, checks access, forwards — and records.

Who may open one, the per-drone limit and the audit trail are
drones.terminal.sessions; a refusal for lack of permission closes the
handshake before anything is opened. Then the bytes flow between the
browser's socket (binary frames both ways; JSON text frames for `resize`
from the browser and `opened` / `exit` / `notice` / `error` to it) and one
of two transports:

* `agent` (default): the drone's agent opens a PTY and relays it over its own
  WebSocket; messages go through the channel layer, from this consumer's
  channel to the agent consumer's and back (relay.py), so browser and agent
  may sit on different replicas. Keystrokes wait here until the
  agent has written the previous INPUT_WINDOW bytes to the PTY (a 1 MB paste
  is fed at the shell's pace); output is acknowledged every ACK_BYTES so the
  agent reads its PTY only as fast as the browser takes it.
* `ssh`: asyncssh from this process, with the drone's pinned host key only
  (ssh.py).

Every byte the terminal shows is recorded on the server as an asciinema v2
cast (recording.py) — the browser has no say in it — and the session's row
is closed with its reason, exit status, byte counts and the recording's
digest, however it ends: exit, the browser closing, idle timeout, maximum
length, the agent going away or the recording limit.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from drones.events import drone_send_async
from drones.models import TerminalSession
from drones.terminal import relay
from drones.terminal.sessions import terminal_session_close, terminal_session_start
from drones.terminal.ssh import SshTerminal, TerminalRefused

logger = logging.getLogger(__name__)

MIN_COLS, MAX_COLS, MIN_ROWS, MAX_ROWS = 2, 500, 1, 200
INPUT_CHUNK = 16 * 1024
#: Keystroke bytes sent to the agent and not yet written to its PTY.
INPUT_WINDOW = 64 * 1024
#: Keystroke bytes this consumer holds for the agent at most (a larger paste is refused, with a notice).
MAX_PENDING_INPUT = 4 * 1024 * 1024
#: Output bytes passed to the browser between two acknowledgements to the agent.
ACK_BYTES = 32 * 1024
OPEN_TIMEOUT = 15.0
PING_INTERVAL, PONG_TIMEOUT = 15.0, 10.0


def clamp_size(cols, rows) -> tuple[int, int]:
    """A terminal size within bounds whatever was asked (0×0, negative, absurd, not a number).

    The agent clamps again to the same bounds (swarm_agent.terminal.clamp_size): it never imports the
    server's code and takes no size on trust, and the server's code does not depend on the agent package.
    """
    def number(value, default):
        try:
            return int(value)
        except (TypeError, ValueError):
            return default

    return (min(max(number(cols, 80), MIN_COLS), MAX_COLS), min(max(number(rows, 24), MIN_ROWS), MAX_ROWS))


def _new_recorder(session: TerminalSession, cols: int, rows: int):
    from drones.terminal.recording import CastRecorder

    return CastRecorder(cols=cols, rows=rows, title=f"{session.username} on {session.drone_name}",
                        max_bytes=settings.SWARM_TERMINAL_RECORDING_MAX_BYTES)


class TerminalConsumer(AsyncWebsocketConsumer):
    """One browser terminal: see the module docstring."""

    session: TerminalSession | None = None
    ended = False

    async def connect(self):
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.cols, self.rows = clamp_size((query.get("cols") or [80])[0], (query.get("rows") or [24])[0])
        transport = (query.get("transport") or ["agent"])[0]
        client = self.scope.get("client") or (None, None)
        decision = await database_sync_to_async(terminal_session_start)(
            user=self.scope.get("user"), drone_name=self.scope["url_route"]["kwargs"]["drone"], transport=transport,
            cols=self.cols, rows=self.rows, client_ip=client[0])
        if decision.session is None or decision.close_code in (4401, 4403, 4404):
            await self.close(code=decision.close_code or 4403)  # refused before anything is opened
            return
        await self.accept()
        if decision.refused:
            await self._send_json({"type": "error", "detail": decision.detail})
            await self.close(code=decision.close_code)
            return
        self.session = decision.session
        self.session_hex = self.session.pk.hex
        self.drone_id = self.session.drone_id
        self.started = self.last_input = time.monotonic()
        self.bytes_in = self.bytes_out = 0
        self.opened = False
        self.pending_input = bytearray()
        self.in_flight = 0
        self.unacked_out = 0
        self.last_ping = self.last_pong = time.monotonic()
        self.ssh: SshTerminal | None = None
        self.agent_channel: str | None = None  # the agent consumer's channel, once it answered
        self.recorder = await asyncio.to_thread(_new_recorder, self.session, self.cols, self.rows)
        self.watchdog = asyncio.ensure_future(self._watch())
        if self.session.transport == TerminalSession.Transport.SSH:
            await self._open_ssh()
        else:
            # To the drone's group: whichever replica holds the agent's socket takes it, and remembers our channel.
            await drone_send_async(self.drone_id, {
                "type": "terminal_open", "session": self.session_hex, "cols": self.cols, "rows": self.rows,
                "idle_timeout": settings.SWARM_TERMINAL_IDLE_TIMEOUT,
                "max_seconds": settings.SWARM_TERMINAL_MAX_SECONDS, "reply_channel": self.channel_name})

    async def _open_ssh(self):
        drone = await database_sync_to_async(lambda: self.session.drone)()
        self.ssh = SshTerminal(drone, on_output=self._output, on_exit=self._ended_by_transport)
        try:
            await self.ssh.open(self.cols, self.rows)
        except TerminalRefused as refusal:
            await self._send_json({"type": "error", "detail": str(refusal)})
            await self._end(str(refusal))
            return
        await self._opened({"transport": "ssh", "host": drone.ssh_host})

    # --- browser → drone -------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.session is None or self.ended:
            return
        if bytes_data:
            self.last_input = time.monotonic()
            self.bytes_in += len(bytes_data)
            if self.ssh is not None:
                await self.ssh.write(bytes_data)
                return
            if len(self.pending_input) + len(bytes_data) > MAX_PENDING_INPUT:
                await self._send_json({"type": "notice", "detail": f"input dropped: more than "
                                                                   f"{MAX_PENDING_INPUT // 1048576} MiB waiting"})
                return
            self.pending_input += bytes_data
            await self._pump_input()
        elif text_data:
            try:
                message = json.loads(text_data)
            except ValueError:
                return
            if isinstance(message, dict) and message.get("type") == "resize":
                await self._resize(message.get("cols"), message.get("rows"))

    async def _resize(self, cols, rows):
        self.cols, self.rows = clamp_size(cols, rows)
        self.recorder.resize(self.cols, self.rows)
        if self.ssh is not None:
            await self.ssh.resize(self.cols, self.rows)
        else:
            await self._to_agent({"type": "terminal_resize", "session": self.session_hex, "cols": self.cols,
                                  "rows": self.rows})
        await self._send_json({"type": "resized", "cols": self.cols, "rows": self.rows})

    async def _pump_input(self):
        while self.opened and self.pending_input and self.in_flight < INPUT_WINDOW and not self.ended:
            chunk = bytes(self.pending_input[:INPUT_CHUNK])
            del self.pending_input[:INPUT_CHUNK]
            self.in_flight += len(chunk)
            await self.channel_layer.send(self.agent_channel, {"type": "agent.binary",
                                                               "data": relay.input_frame(self.session_hex, chunk)})

    async def _to_agent(self, message: dict):
        """A control message to the agent: to its consumer's channel once known, else through the drone's group."""
        if self.agent_channel is not None:
            await self.channel_layer.send(self.agent_channel, {"type": "agent.message", "message": message})
        else:
            await drone_send_async(self.drone_id, message)

    # --- drone → browser (agent transport: channel-layer events from relay.py) ---------------

    async def terminal_opened(self, event):
        self.agent_channel = event.get("agent_channel")
        await self._opened({"transport": "agent", "pid": event.get("pid"), "shell": event.get("shell")})

    async def _opened(self, info: dict):
        self.opened = True
        await self._send_json({"type": "opened", "session": self.session_hex, "drone": self.session.drone_name,
                               "cols": self.cols, "rows": self.rows, **info})
        await self._pump_input()

    async def terminal_output(self, event):
        await self._output(event["data"])
        self.unacked_out += len(event["data"])
        if self.unacked_out >= ACK_BYTES and not self.ended:
            await self._to_agent({"type": "terminal_ack", "session": self.session_hex, "bytes": self.unacked_out})
            self.unacked_out = 0

    async def _output(self, data: bytes):
        if self.ended:
            return
        self.bytes_out += len(data)
        self.recorder.output(data)
        try:
            await self.send(bytes_data=data)
        except Exception:  # noqa: BLE001 - the browser went away; disconnect() ends the session
            return
        if self.recorder.full:
            await self._end(f"recording limit ({settings.SWARM_TERMINAL_RECORDING_MAX_BYTES} bytes) reached")

    async def terminal_input_ack(self, event):
        try:
            self.in_flight = max(0, self.in_flight - int(event.get("bytes", 0)))
        except (TypeError, ValueError):
            return
        await self._pump_input()

    async def terminal_pong(self, event):
        self.last_pong = time.monotonic()
        if not event.get("alive", True):
            await self._end("the agent no longer knows this session")

    async def terminal_error(self, event):
        await self._send_json({"type": "error", "detail": str(event.get("detail", "the agent refused"))[:300]})
        await self._end(str(event.get("detail", "refused by the agent"))[:200])

    async def terminal_exit(self, event):
        await self._ended_by_transport(event.get("exit_status"), str(event.get("reason") or "exit"))

    async def _ended_by_transport(self, exit_status, reason: str):
        await self._end(reason, exit_status=exit_status)

    # --- limits and the end ----------------------------------------------------------------

    async def _watch(self):
        idle, longest = settings.SWARM_TERMINAL_IDLE_TIMEOUT, settings.SWARM_TERMINAL_MAX_SECONDS
        while not self.ended:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if not self.opened and now - self.started > OPEN_TIMEOUT:
                await self._send_json({"type": "error", "detail": f"the agent did not open the terminal within "
                                                                  f"{OPEN_TIMEOUT:g} s"})
                await self._end("the agent did not open the terminal")
            elif idle and now - self.last_input > idle:
                await self._send_json({"type": "notice", "detail": f"closed after {idle:g} s without input"})
                await self._end(f"idle for {idle:g} s")
            elif longest and now - self.started > longest:
                await self._send_json({"type": "notice", "detail": f"closed: sessions last at most {longest:g} s"})
                await self._end(f"maximum session length ({longest:g} s)")
            elif self.ssh is None and self.opened:
                if self.last_pong < self.last_ping and now - self.last_ping > PONG_TIMEOUT:
                    await self._end("the agent stopped answering")
                elif now - self.last_ping > PING_INTERVAL:
                    self.last_ping = now
                    await self._to_agent({"type": "terminal_ping", "session": self.session_hex})

    async def _end(self, reason: str, *, exit_status=None):
        """Close everything once: the drone's side, the recording, the session row, the browser's socket."""
        if self.ended or self.session is None:
            return
        self.ended = True
        if self.watchdog is not asyncio.current_task():
            self.watchdog.cancel()
        try:
            if self.ssh is not None:
                await self.ssh.close(reason)
            else:
                await self._to_agent({"type": "terminal_close", "session": self.session_hex, "reason": reason})
        except Exception:  # noqa: BLE001 - the agent is gone anyway; the row and recording still close
            logger.warning("terminal %s: could not tell the drone it ended", self.session_hex, exc_info=True)
        recording = None
        try:
            recording = await asyncio.to_thread(self.recorder.finish)
        except Exception:  # noqa: BLE001
            logger.exception("terminal %s: storing the recording failed", self.session_hex)
        await database_sync_to_async(terminal_session_close)(
            session_id=self.session.pk, reason=reason, exit_status=exit_status, bytes_in=self.bytes_in,
            bytes_out=self.bytes_out, recording=recording, cols=self.cols, rows=self.rows)
        await self._send_json({"type": "exit", "exit_status": exit_status, "reason": reason,
                               "recording": recording[0] if recording else None})
        try:
            await self.close(code=1000)
        except Exception:  # noqa: BLE001 - already closed by the browser
            pass

    async def disconnect(self, code):
        await self._end("the browser closed the terminal")

    async def _send_json(self, message: dict):
        try:
            await self.send(text_data=json.dumps(message))
        except Exception:  # noqa: BLE001 - the browser is gone
            pass
