"""Terminals on this drone: a PTY per session, relayed over the agent's own WebSocket (no inbound SSH).

The control plane opens a session with a JSON `terminal_open` message and a
random session id; from then on, bytes travel as binary WebSocket frames of
the agent's one connection, multiplexed by that id:

    server → agent   0x01 | 16-byte session id | keystrokes
    agent → server   0x02 | 16-byte session id | terminal output

and JSON control messages: `terminal_resize`, `terminal_close`,
`terminal_ack` (the server has passed on that many output bytes),
`terminal_ping` from the server; `terminal_opened`, `terminal_exit`,
`terminal_input_ack` (that many keystroke bytes reached the PTY; one for a
burst of typing, not one per key),
`terminal_pong` and `terminal_error` from the agent.

Both directions are flow controlled: the agent stops reading the PTY while
more than OUTPUT_WINDOW bytes are unacknowledged (the shell then blocks on
its writes, as on a slow terminal), and acknowledges keystrokes only once
they are written to the PTY, so the server never has more than its window of
a large paste in flight. A session ends when its shell exits, when the
server closes it, when it outlives the limits the server sent, and when the
WebSocket drops (nobody could see it any more): then every process of the
session (its whole Unix session, background jobs too) gets SIGHUP and, a
second later, SIGKILL.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import signal
import struct
import subprocess
import termios
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

INPUT_FRAME, OUTPUT_FRAME = 0x01, 0x02
SESSION_ID_BYTES = 16
READ_CHUNK = 16 * 1024
#: Output bytes in flight (sent, not yet acknowledged by the server) before the PTY is no longer read.
OUTPUT_WINDOW = 256 * 1024
#: Terminal sizes the agent accepts (the server clamps to the same).
MIN_COLS, MAX_COLS, MIN_ROWS, MAX_ROWS = 2, 500, 1, 200
KILL_GRACE_SECONDS = 1.0
#: Keystroke bytes written to the PTY are acknowledged once this many have gone in, or this long after the last.
INPUT_ACK_BYTES, INPUT_ACK_DELAY = 16 * 1024, 0.05


def clamp_size(cols, rows) -> tuple[int, int]:
    """A terminal size within bounds whatever was asked (0×0, negative, absurd, not a number)."""
    def number(value, default):
        try:
            return int(value)
        except (TypeError, ValueError):
            return default

    return (min(max(number(cols, 80), MIN_COLS), MAX_COLS), min(max(number(rows, 24), MIN_ROWS), MAX_ROWS))


def frame(kind: int, session_id: str, data: bytes) -> bytes:
    """A binary frame: kind byte, session id, payload."""
    return bytes([kind]) + uuid.UUID(hex=session_id).bytes + data


def parse_frame(raw: bytes) -> tuple[int, str, bytes] | None:
    """(kind, session id hex, payload) of a binary frame, or None when it is malformed."""
    if len(raw) < 1 + SESSION_ID_BYTES:
        return None
    return raw[0], uuid.UUID(bytes=bytes(raw[1:1 + SESSION_ID_BYTES])).hex, bytes(raw[1 + SESSION_ID_BYTES:])


def session_processes(session_leader: int) -> list[int]:
    """Every process of the Unix session `session_leader` leads (from /proc; background jobs included)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[3]) == session_leader:  # field 6 of stat: the session id
            pids.append(int(entry.name))
    return pids


def signal_session(session_leader: int, signum: int) -> None:
    for pid in session_processes(session_leader) or [session_leader]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


class TerminalSettings:
    """How this agent opens terminals (from `swarm-agent run` options)."""

    def __init__(self, *, enabled: bool = True, shell: str | None = None, user: str | None = None,
                 max_sessions: int = 8):
        self.enabled = enabled
        self.user = user
        self.shell = shell
        self.max_sessions = max_sessions

    def account(self) -> pwd.struct_passwd:
        return pwd.getpwnam(self.user) if self.user else pwd.getpwuid(os.getuid())

    def argv(self) -> list[str]:
        shell = self.shell or self.account().pw_shell or ""
        if not shell or not os.path.exists(shell):
            shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        return [shell, "-l"]


class PtySession:
    """One shell on a PTY and the tasks that relay it."""

    def __init__(self, manager: TerminalManager, session_id: str, *, cols: int, rows: int,
                 idle_timeout: float | None, max_seconds: float | None):
        self.manager = manager
        self.session_id = session_id
        self.cols, self.rows = clamp_size(cols, rows)
        self.idle_timeout = idle_timeout
        self.max_seconds = max_seconds
        self.started = self.last_input = time.monotonic()
        self.unacked = 0
        self.window_open = asyncio.Event()
        self.window_open.set()
        self.input_queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.written_unacked = 0
        self.input_ack_timer: asyncio.TimerHandle | None = None
        self.process: subprocess.Popen | None = None
        self.master: int | None = None
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.end_reason = ""

    # --- life --------------------------------------------------------------------------

    def spawn(self) -> None:
        settings = self.manager.settings
        account = settings.account()
        master, slave = os.openpty()
        self._apply_size(master)
        env = {"TERM": "xterm-256color", "HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name,
               "SHELL": settings.argv()[0], "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
               "LANG": os.environ.get("LANG", "C.UTF-8"), "SWARM_TERMINAL_SESSION": self.session_id}
        switch = {}
        if settings.user and os.getuid() == 0 and account.pw_uid != 0:
            switch = {"user": account.pw_uid, "group": account.pw_gid,
                      "extra_groups": os.getgrouplist(account.pw_name, account.pw_gid)}
        cwd = account.pw_dir if os.path.isdir(account.pw_dir) else "/"

        def controlling_terminal():  # runs in the child, after setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            self.process = subprocess.Popen(  # noqa: S603 - the configured shell
                settings.argv(), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True,
                start_new_session=True, preexec_fn=controlling_terminal, **switch)
        finally:
            os.close(slave)
        self.master = master
        os.set_blocking(master, False)

    def _apply_size(self, fd: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))

    def resize(self, cols, rows) -> None:
        self.cols, self.rows = clamp_size(cols, rows)
        if self.master is not None and not self.closed:
            with contextlib.suppress(OSError):
                self._apply_size(self.master)
                if self.process is not None:
                    os.killpg(self.process.pid, signal.SIGWINCH)

    def start(self) -> None:
        self.tasks = [asyncio.ensure_future(self._pump_output()), asyncio.ensure_future(self._pump_input()),
                      asyncio.ensure_future(self._wait_exit()), asyncio.ensure_future(self._watch_limits())]

    async def close(self, reason: str) -> None:
        """Kill the session's processes and stop relaying (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.end_reason = self.end_reason or reason
        if self.process is not None and self.process.poll() is None:
            signal_session(self.process.pid, signal.SIGHUP)
            await asyncio.sleep(0)
            deadline = time.monotonic() + KILL_GRACE_SECONDS
            while time.monotonic() < deadline and session_processes(self.process.pid):
                await asyncio.sleep(0.05)
            signal_session(self.process.pid, signal.SIGKILL)
        self.input_queue.put_nowait(None)
        self.window_open.set()

    # --- relaying ------------------------------------------------------------------------

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_reader(self.master, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(self.master)

    async def _pump_output(self) -> None:
        while True:
            await self.window_open.wait()
            if self.master is None:
                return
            try:
                data = os.read(self.master, READ_CHUNK)
            except BlockingIOError:
                if self.closed and self.process is not None and self.process.poll() is not None:
                    return
                await self._readable()
                continue
            except OSError:  # EIO: every process holding the PTY's other end is gone
                return
            if not data:
                return
            self.unacked += len(data)
            if self.unacked >= OUTPUT_WINDOW:
                self.window_open.clear()
            await self.manager.send_binary(frame(OUTPUT_FRAME, self.session_id, data))

    def acknowledged(self, count) -> None:
        with contextlib.suppress(TypeError, ValueError):
            self.unacked = max(0, self.unacked - int(count))
        if self.unacked < OUTPUT_WINDOW:
            self.window_open.set()

    def typed(self, data: bytes) -> None:
        self.last_input = time.monotonic()
        self.input_queue.put_nowait(data)

    async def _pump_input(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self.input_queue.get()
            if data is None or self.closed:
                return
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self.master, view)
                    view = view[written:]
                except BlockingIOError:  # the PTY's input buffer is full: wait until the shell reads
                    ready = loop.create_future()
                    loop.add_writer(self.master, lambda: ready.done() or ready.set_result(None))
                    try:
                        await asyncio.wait_for(ready, timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
                    finally:
                        loop.remove_writer(self.master)
                    if self.closed:
                        return
                except OSError:
                    return
            self.written_unacked += len(data)
            if self.written_unacked >= INPUT_ACK_BYTES:
                await self._ack_input()
            elif self.input_ack_timer is None:  # typing: one acknowledgement for a burst, not one per key
                self.input_ack_timer = asyncio.get_running_loop().call_later(
                    INPUT_ACK_DELAY, lambda: asyncio.ensure_future(self._ack_input()))

    async def _ack_input(self) -> None:
        if self.input_ack_timer is not None:
            self.input_ack_timer.cancel()
            self.input_ack_timer = None
        count, self.written_unacked = self.written_unacked, 0
        if count:
            await self.manager.send_json({"type": "terminal_input_ack", "session": self.session_id, "bytes": count})

    async def _wait_exit(self) -> None:
        status = await asyncio.get_running_loop().run_in_executor(None, self.process.wait)
        # What the shell printed last is still in the PTY: let the output pump finish it.
        output = self.tasks[0]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(output), timeout=0.5)
        await self.close("exit")
        output.cancel()
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None
        exit_status = status if status >= 0 else 128 - status
        await self.manager.finished(self, exit_status=exit_status, reason=self.end_reason)

    async def _watch_limits(self) -> None:
        while not self.closed:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self.max_seconds and now - self.started > self.max_seconds:
                await self.close(f"maximum session length ({self.max_seconds:g} s) reached")
            elif self.idle_timeout and now - self.last_input > self.idle_timeout:
                await self.close(f"idle for {self.idle_timeout:g} s")


class TerminalManager:
    """The agent's terminal sessions, keyed by session id; driven by the terminal plugin."""

    def __init__(self, settings: TerminalSettings, *, send_json, send_binary):
        self.settings = settings
        self.send_json = send_json
        self.send_binary = send_binary
        self.sessions: dict[str, PtySession] = {}

    async def on_message(self, message: dict) -> bool:
        kind = message.get("type", "")
        if not kind.startswith("terminal_"):
            return False
        session_id = str(message.get("session", ""))
        try:
            session_id = uuid.UUID(hex=session_id).hex
        except ValueError:
            return True
        if kind == "terminal_open":
            await self.open(session_id, message)
            return True
        session = self.sessions.get(session_id)
        if kind == "terminal_ping":
            await self.send_json({"type": "terminal_pong", "session": session_id, "alive": session is not None})
        elif session is None:
            if kind == "terminal_close":
                await self.send_json({"type": "terminal_exit", "session": session_id, "exit_status": None,
                                      "reason": "no such session on the agent"})
        elif kind == "terminal_resize":
            session.resize(message.get("cols"), message.get("rows"))
        elif kind == "terminal_ack":
            session.acknowledged(message.get("bytes", 0))
        elif kind == "terminal_close":
            await session.close(str(message.get("reason") or "closed by the control plane")[:200])
        return True

    async def open(self, session_id: str, message: dict) -> None:
        refusal = None
        if not self.settings.enabled:
            refusal = "terminals are disabled on this agent (swarm-agent run --no-terminal)"
        elif len(self.sessions) >= self.settings.max_sessions:
            refusal = f"this agent already runs {len(self.sessions)} terminal sessions (its limit)"
        elif session_id in self.sessions:
            refusal = "session id in use"
        if refusal is None:
            session = PtySession(self, session_id, cols=message.get("cols"), rows=message.get("rows"),
                                 idle_timeout=_seconds(message.get("idle_timeout")),
                                 max_seconds=_seconds(message.get("max_seconds")))
            try:
                session.spawn()
            except (OSError, KeyError, subprocess.SubprocessError) as error:
                refusal = f"could not start the shell: {error}"
        if refusal is not None:
            logger.warning("terminal %s refused: %s", session_id, refusal)
            await self.send_json({"type": "terminal_error", "session": session_id, "detail": refusal})
            return
        self.sessions[session_id] = session
        session.start()
        logger.info("terminal %s opened: pid %s, %sx%s", session_id, session.process.pid, session.cols, session.rows)
        await self.send_json({"type": "terminal_opened", "session": session_id, "pid": session.process.pid,
                              "shell": self.settings.argv()[0], "cols": session.cols, "rows": session.rows})

    async def on_binary(self, raw: bytes) -> bool:
        parsed = parse_frame(raw)
        if parsed is None or parsed[0] != INPUT_FRAME:
            return False
        session = self.sessions.get(parsed[1])
        if session is not None and parsed[2]:
            session.typed(parsed[2])
        return True

    async def finished(self, session: PtySession, *, exit_status: int, reason: str) -> None:
        self.sessions.pop(session.session_id, None)
        for task in session.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        logger.info("terminal %s ended (%s, exit %s)", session.session_id, reason, exit_status)
        await self.send_json({"type": "terminal_exit", "session": session.session_id, "exit_status": exit_status,
                              "reason": reason})

    async def close_all(self, reason: str) -> None:
        """The WebSocket is gone: nobody can see these terminals any more."""
        for session in list(self.sessions.values()):
            await session.close(reason)


def _seconds(value) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None
