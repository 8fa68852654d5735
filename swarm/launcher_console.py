"""What `make run` shows in the terminal: its children's output filtered by level, and the summary box.

Every child (web, worker, beat, drone) writes to a pipe the launcher reads;
each line goes to the child's log file (`var/logs/<name>.log`) and, when its
level is at least the terminal's (WARNING unless `-v` or SWARM_LOG_LEVEL say
otherwise), to the terminal too. Idle `make run` is then quiet: heartbeats,
claim polls and beat's routine tasks are INFO lines, kept in the files. A
line with no level of its own (a traceback's continuation) goes where the
line before it went. Like the launcher, this module never imports Django.
"""
from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from swarm.embedded.process import parent_death_signal

#: Levels as the children name them, most verbose first.
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "WARN": logging.WARNING,
          "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL, "FATAL": logging.CRITICAL}
#: `2026-12-02 01:13:08,362 INFO httpx: …` (the agent) or `[2026-… : WARNING/MainProcess] …` (Celery's own).
_PLAIN_LEVEL = re.compile(r"^[\[\d][^\]]{0,40}?[\s:]+(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b")
_BARE_LEVEL = re.compile(r"^(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)[:\s]")

_print_lock = threading.Lock()


def say(message: str) -> None:
    """One line of the launcher's own, never interleaved with a child's."""
    with _print_lock:
        print(f"[swarm] {message}", flush=True)


def level_of(line: str) -> int | None:
    """The log level a line states, or None for a line without one (a continuation, a banner)."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("level"), str):
            return LEVELS.get(record["level"].upper())
    match = _PLAIN_LEVEL.match(line) or _BARE_LEVEL.match(line)
    if match:
        return LEVELS[match.group(1)]
    if line.startswith("Traceback (most recent call last)"):
        return logging.ERROR
    return None


def for_terminal(name: str, line: str) -> str:
    """A line as the terminal shows it: JSON records made readable, prefixed by the child's name."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "message" in record:
            text = f"{record.get('level', '')} {record.get('logger', '')}: {record['message']}"
            if record.get("exc"):
                text += "\n" + str(record["exc"]).rstrip()
            line = text
    return "\n".join(f"{name:>6} | {part}" for part in line.splitlines() or [""])


@dataclass
class ChildOutput:
    """Copies one child's output into its log file and, filtered by level, onto the terminal."""

    name: str
    log_path: Path
    terminal_level: int
    #: Lines the launcher waits for (`watch()`): the pattern and the event set when a line matches.
    _watches: list = field(default_factory=list)
    #: The last lines, shown when the child exits unexpectedly.
    tail: deque = field(default_factory=lambda: deque(maxlen=30))
    _thread: threading.Thread | None = None

    def watch(self, pattern: str) -> threading.Event:
        """An event set once the child prints a line containing `pattern`."""
        event = threading.Event()
        self._watches.append((pattern, event))
        return event

    def start(self, stream) -> None:
        self._thread = threading.Thread(target=self._copy, args=(stream,), name=f"output-{self.name}",
                                        daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _copy(self, stream) -> None:
        shown = False
        with open(self.log_path, "ab") as log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace").rstrip("\n")
                self.tail.append(line)
                for pattern, event in self._watches:
                    if pattern in line:
                        event.set()
                level = level_of(line)
                if level is not None:
                    shown = level >= self.terminal_level
                if shown:
                    with _print_lock:
                        print(for_terminal(self.name, line), flush=True)
        stream.close()


def spawn_child(name: str, argv: list[str], *, log_dir: Path, terminal_level: int, cwd: Path,
                env: dict | None = None) -> tuple[subprocess.Popen, ChildOutput]:
    """Start one long-running child in its own process group, its output relayed by a `ChildOutput`."""
    output = ChildOutput(name=name, log_path=log_dir / f"{name}.log", terminal_level=terminal_level)
    # Its own session (Ctrl-C reaches only the launcher, which stops children in order), and SIGTERM from
    # the kernel should the launcher itself be killed: a child never outlives it.
    process = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               preexec_fn=parent_death_signal(signal.SIGTERM))
    output.start(process.stdout)
    return process, output


@dataclass(frozen=True)
class Summary:
    """What the box at the end of start-up says."""

    base_url: str
    admin_user: str
    admin_password: str | None  # only on the run that created the user
    password_from_env: bool
    log_dir: Path
    children: tuple[str, ...]
    drone_name: str | None


def summary_lines(summary: Summary, *, manage: str) -> list[str]:
    """The box's rows: label, then text."""
    url = summary.base_url
    if summary.admin_password:
        password = f"{summary.admin_password}   (shown once; change it: {manage} changepassword {summary.admin_user})"
    elif summary.password_from_env:
        password = "from SWARM_ADMIN_PASSWORD"
    else:
        password = f"set on the first run; reset it: {manage} changepassword {summary.admin_user}"
    rows = [
        ("admin", f"{url}/admin/"),
        ("user", summary.admin_user),
        ("password", password),
        ("API docs", f"{url}/api/docs/"),
        ("tokens", f"{manage} issue_token --scope engine --tenant acme --create-tenant"),
        ("", f"{manage} issue_token --scope admin   (drones, pings, payloads)"),
        ("CLI", f"export SWARM_URL={url} SWARM_TOKEN=<token>; .venv/bin/swarmctl --help"),
    ]
    if summary.drone_name:
        rows.append(("drone", f"{summary.drone_name} (a local agent: builds and pings run here)"))
    rows += [
        ("logs", f"{summary.log_dir}/{{{','.join(summary.children)}}}.log  (-v: INFO lines here too)"),
        ("stop", "Ctrl-C"),
    ]
    return [f"{label:<9} {text}" if label or text else "" for label, text in rows]


def summary_box(summary: Summary, *, manage: str = ".venv/bin/python manage.py") -> str:
    """The summary as a box (Unicode lines where the terminal's encoding has them, else ASCII)."""
    lines = summary_lines(summary, manage=manage)
    width = max(len(line) for line in lines)
    encoding = (getattr(sys.stdout, "encoding", None) or "ascii").lower()
    unicode_ok = encoding.replace("-", "") in ("utf8", "utf16", "utf32")
    top_left, top_right, bottom_left, bottom_right, horizontal, vertical = (
        ("╭", "╮", "╰", "╯", "─", "│") if unicode_ok else ("+", "+", "+", "+", "-", "|"))
    title = " Swarm is up "
    top = f"{top_left}{horizontal}{title}{horizontal * (width + 1 - len(title))}{top_right}"
    body = [f"{vertical} {line.ljust(width)} {vertical}" for line in lines]
    bottom = f"{bottom_left}{horizontal * (width + 2)}{bottom_right}"
    return "\n".join([top, *body, bottom])


def print_block(text: str) -> None:
    """Print several lines at once, not interleaved with children's lines."""
    with _print_lock:
        print(text, flush=True)


def wait_for_events(events: list[threading.Event], timeout: float) -> bool:
    """Wait until every event is set, or `timeout` seconds have passed; True if all were set."""
    deadline = time.monotonic() + timeout
    for event in events:
        if not event.wait(max(0.0, deadline - time.monotonic())):
            return False
    return True
