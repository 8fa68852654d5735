"""A drone's system log, tailed for the admin's viewer over the agent's WebSocket.

The control plane sends `syslog_open {session, filter}`; the agent runs
`journalctl -f -n 200` (the systemd journal) or, when files are configured
(`swarm-agent run --syslog-file PATH`, repeatable) or there is no journal,
`tail -F -n 200` over them, keeps the lines containing the filter text
(case-insensitive), and sends them in batches — `syslog_lines {session,
lines, skipped}`, at most BATCHES_PER_SECOND a second and LINES_PER_SECOND
lines a second, the rest counted as skipped rather than queued without end.
`syslog_close {session}` (or the WebSocket dropping) stops the tail. A new
filter is a new `syslog_open` for the same session: the tail restarts, so
the last 200 lines are filtered too.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
import uuid

logger = logging.getLogger(__name__)

BACKLOG_LINES = 200
BATCHES_PER_SECOND = 5
LINES_PER_SECOND = 2000
MAX_LINE_CHARS = 2000
FALLBACK_FILES = ("/var/log/syslog", "/var/log/messages")


def tail_argv(files: list[str]) -> list[str] | None:
    """The command that follows the system log here, or None when there is nothing to follow."""
    if files:
        return ["tail", "-n", str(BACKLOG_LINES), "-F", *files]
    if shutil.which("journalctl") and os.path.isdir("/run/systemd/journal"):
        return ["journalctl", "-f", "-n", str(BACKLOG_LINES), "-o", "short-iso", "--no-pager"]
    readable = [path for path in FALLBACK_FILES if os.access(path, os.R_OK)]
    return ["tail", "-n", str(BACKLOG_LINES), "-F", *readable] if readable else None


class SyslogTail:
    """One viewer's tail: a `journalctl -f` / `tail -F` process and its filtered, batched lines."""

    def __init__(self, manager: SyslogManager, session_id: str, text_filter: str):
        self.manager = manager
        self.session_id = session_id
        self.text_filter = text_filter.lower()
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task | None = None

    async def start(self, argv: list[str]) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True)
        self.task = asyncio.ensure_future(self._relay())

    async def _relay(self) -> None:
        pending: list[str] = []
        skipped = 0
        window_start, sent_in_window = time.monotonic(), 0
        flush_at = time.monotonic() + 1.0 / BATCHES_PER_SECOND
        reader = self.process.stdout
        while True:
            timeout = max(0.0, flush_at - time.monotonic())
            try:
                raw = await asyncio.wait_for(reader.readline(), timeout=timeout)
            except asyncio.TimeoutError:
                raw = None
            if raw == b"":  # the tail ended
                break
            if raw:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")[:MAX_LINE_CHARS]
                if not self.text_filter or self.text_filter in line.lower():
                    if sent_in_window + len(pending) < LINES_PER_SECOND:
                        pending.append(line)
                    else:
                        skipped += 1
            if time.monotonic() >= flush_at:
                if pending or skipped:
                    await self.manager.send_json({"type": "syslog_lines", "session": self.session_id,
                                                  "lines": pending, "skipped": skipped})
                    sent_in_window += len(pending)
                    pending, skipped = [], 0
                flush_at = time.monotonic() + 1.0 / BATCHES_PER_SECOND
                if time.monotonic() - window_start >= 1.0:
                    window_start, sent_in_window = time.monotonic(), 0
        if pending or skipped:
            await self.manager.send_json({"type": "syslog_lines", "session": self.session_id, "lines": pending,
                                          "skipped": skipped})
        code = await self.process.wait()
        await self.manager.send_json({"type": "syslog_end", "session": self.session_id,
                                      "detail": f"the log tail exited ({code})"})

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout=2)
        if self.task is not None:
            self.task.cancel()


class SyslogManager:
    """The system log tails this agent runs for viewers, keyed by session id."""

    def __init__(self, files: list[str], *, send_json):
        self.files = list(files)
        self.send_json = send_json
        self.tails: dict[str, SyslogTail] = {}

    async def on_message(self, message: dict) -> bool:
        kind = message.get("type", "")
        if kind not in ("syslog_open", "syslog_close"):
            return False
        try:
            session_id = uuid.UUID(hex=str(message.get("session", ""))).hex
        except ValueError:
            return True
        previous = self.tails.pop(session_id, None)
        if previous is not None:
            await previous.stop()
        if kind == "syslog_close":
            return True
        argv = tail_argv(self.files)
        if argv is None:
            await self.send_json({"type": "syslog_end", "session": session_id,
                                  "detail": "no systemd journal here and no log file configured "
                                            "(swarm-agent run --syslog-file PATH)"})
            return True
        text_filter = message.get("filter") if isinstance(message.get("filter"), str) else ""
        tail = SyslogTail(self, session_id, text_filter[:200])
        try:
            await tail.start(argv)
        except OSError as error:
            await self.send_json({"type": "syslog_end", "session": session_id, "detail": f"{argv[0]}: {error}"})
            return True
        self.tails[session_id] = tail
        await self.send_json({"type": "syslog_started", "session": session_id, "source": " ".join(argv)})
        return True

    async def close_all(self) -> None:
        for tail in list(self.tails.values()):
            await tail.stop()
        self.tails.clear()
