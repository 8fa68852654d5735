"""Terminals on drones through a real uvicorn server and a real `swarm-agent run`, driven over WebSockets.

Who may open one (and the audit of who may not), the round trip with its
recording, resizes clamped, a 1 MB paste, the browser or the agent going away
mid-session, the per-drone limit, and a second server replica between the
browser and the agent.
"""
from __future__ import annotations

import json
import time

import psutil
import pytest
import websockets
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from websockets.sync.client import connect

from drones.models import Drone, TerminalSession
from drones.tests.conftest import register_drone, wait_until
from swarm.core.models import AuditLogEntry

pytestmark = pytest.mark.live

PASSWORD = "correct horse battery"


def staff_user(username: str, *, permitted: bool = True, staff: bool = True):
    user = get_user_model().objects.create_user(username, f"{username}@example.test", PASSWORD, is_staff=staff)
    if permitted:
        user.user_permissions.add(Permission.objects.get(codename="open_terminal"))
    return user


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


class Terminal:
    """A browser's end of /ws/terminal/<drone>/, over a real WebSocket."""

    def __init__(self, base_url: str, drone: str, *, cookie: str | None, cols: int = 80, rows: int = 24,
                 transport: str = "agent"):
        url = f"{base_url.replace('http://', 'ws://')}/ws/terminal/{drone}/?cols={cols}&rows={rows}&transport={transport}"
        headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
        self.socket = connect(url, additional_headers=headers, open_timeout=15, max_size=None).__enter__()
        self.output = bytearray()
        self.messages: list[dict] = []

    def read_until(self, predicate, *, timeout: float = 20.0, what: str = "output"):
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; output so far: {bytes(self.output)[-2000:]!r}, "
                                     f"messages: {self.messages}")
            try:
                frame = self.socket.recv(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
            except websockets.ConnectionClosed:
                if predicate():
                    return
                raise AssertionError(f"closed while waiting for {what}: {self.messages} {bytes(self.output)[-500:]!r}")
            if isinstance(frame, bytes):
                self.output += frame
            else:
                self.messages.append(json.loads(frame))

    def message(self, kind: str, **kwargs) -> dict:
        self.read_until(lambda: any(m["type"] == kind for m in self.messages), what=f"a {kind!r} message", **kwargs)
        return next(m for m in self.messages if m["type"] == kind)

    def type(self, text: str | bytes) -> None:
        self.socket.send(text.encode() if isinstance(text, str) else text)

    def resize(self, cols, rows) -> None:
        self.socket.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def terminal_drone(start_agent, join_token):
    """A real agent (`term-1`), registered, heartbeating and connected."""
    agent = start_agent("term-1", join_token, extra=["--terminal-shell", "/bin/bash"])
    wait_until(lambda: Drone.objects.filter(name="term-1", ws_connected=True).exists(),
               message="the agent's WebSocket")
    return agent


def refused_at_handshake(base_url, drone, cookie) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        Terminal(base_url, drone, cookie=cookie)
    return refused.value.response.status_code


def test_only_staff_with_open_terminal_may_and_every_refusal_is_audited(live_url):
    register_drone("locked-1")
    assert refused_at_handshake(live_url, "locked-1", None) == 403  # anonymous: refused, nobody to attribute
    assert not TerminalSession.objects.exists()

    outsider = staff_user("outsider", permitted=True, staff=False)
    assert refused_at_handshake(live_url, "locked-1", session_cookie(outsider)) == 403
    viewer = staff_user("viewer", permitted=False)
    assert refused_at_handshake(live_url, "locked-1", session_cookie(viewer)) == 403

    refusals = {row.username: row for row in TerminalSession.objects.all()}
    assert refusals.keys() == {"outsider", "viewer"}
    assert all(row.state == "refused" and row.drone_name == "locked-1" and row.bytes_in == 0
               for row in refusals.values())
    assert "drones.open_terminal" in refusals["viewer"].refused_reason
    assert "staff" in refusals["outsider"].refused_reason
    audited = AuditLogEntry.objects.filter(action="terminal.refused").values_list("actor", flat=True)
    assert sorted(audited) == ["user:outsider", "user:viewer"]
    assert not AuditLogEntry.objects.filter(action="terminal.open").exists()


def test_terminal_round_trip_is_recorded_and_resizes_are_clamped(live_url, terminal_drone):
    from bundles.blobstore import BlobStore
    from drones.terminal.recording import recording_key

    operator = staff_user("operator")
    terminal = Terminal(live_url, "term-1", cookie=session_cookie(operator), cols=0, rows=0)
    opened = terminal.message("opened")
    assert (opened["cols"], opened["rows"]) == (2, 1), "0×0 is clamped to the smallest terminal"
    assert opened["transport"] == "agent" and opened["pid"] > 0
    terminal.resize(100_000, -5)
    terminal.read_until(lambda: any(m["type"] == "resized" for m in terminal.messages), what="the resize")
    assert [m for m in terminal.messages if m["type"] == "resized"][-1] == {"type": "resized", "cols": 500, "rows": 1}
    terminal.resize(132, 43)
    terminal.type("stty size; echo hello-$((6*7))\r")
    terminal.read_until(lambda: b"hello-42" in terminal.output and b"43 132" in terminal.output, what="hello")
    terminal.type("exit 3\r")
    ended = terminal.message("exit")
    assert ended["exit_status"] == 3 and ended["reason"] == "exit"

    session = wait_until(lambda: TerminalSession.objects.filter(state="closed").first(), message="the closed row")
    assert (session.username, session.drone_name, session.transport) == ("operator", "term-1", "agent")
    assert session.exit_status == 3 and session.end_reason == "exit"
    assert session.bytes_in == len("stty size; echo hello-$((6*7))\r") + len("exit 3\r")
    assert session.bytes_out == len(terminal.output)
    assert ended["recording"] == session.recording_sha256
    cast = BlobStore().open(recording_key(session.recording_sha256)).read()
    assert len(cast) == session.recording_size
    header, *events = [json.loads(line) for line in cast.decode().splitlines()]
    assert header["version"] == 2 and (header["width"], header["height"]) == (2, 1)
    assert ["r", "500x1"] in [event[1:] for event in events] and ["r", "132x43"] in [event[1:] for event in events]
    replayed = "".join(event[2] for event in events if event[1] == "o")
    assert replayed == terminal.output.decode("utf-8", errors="replace"), "the recording holds every byte shown"
    actions = list(AuditLogEntry.objects.filter(object_id=str(session.pk)).values_list("action", flat=True))
    assert sorted(actions) == ["terminal.close", "terminal.open"]


def _session_processes(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def test_closing_the_browser_kills_the_shell_and_its_jobs_on_the_drone(live_url, terminal_drone):
    terminal = Terminal(live_url, "term-1", cookie=session_cookie(staff_user("closer")))
    shell_pid = terminal.message("opened")["pid"]
    terminal.type("sleep 4321 & sleep 1234\r")
    wait_until(lambda: len(_session_processes("sleep 4321")) == 1 and _session_processes("sleep 1234"),
               message="the shell's two sleeps", timeout=15)
    assert psutil.pid_exists(shell_pid)
    terminal.close()
    closed_at = time.monotonic()
    wait_until(lambda: not psutil.pid_exists(shell_pid) and not _session_processes("sleep 4321")
               and not _session_processes("sleep 1234"), timeout=5, message="the PTY's processes to be gone")
    assert time.monotonic() - closed_at < 5
    session = wait_until(lambda: TerminalSession.objects.filter(state="closed").first(), message="the closed row")
    assert session.end_reason == "the browser closed the terminal" and session.recording_sha256


def test_a_megabyte_pasted_at_once_arrives_whole(live_url, terminal_drone, tmp_path):
    terminal = Terminal(live_url, "term-1", cookie=session_cookie(staff_user("paster")))
    terminal.message("opened")
    target = tmp_path / "paste.txt"
    terminal.type(f"stty -echo; cat > {target}; stty echo; wc -c < {target}; echo pasted-$((1+1))\r")
    time.sleep(0.5)
    line = b"x" * 999 + b"\n"
    paste = line * 1049  # 1,048,576 + 1,048 bytes, one WebSocket frame
    terminal.type(paste)
    terminal.type(b"\x04")  # end of input for cat
    terminal.read_until(lambda: b"pasted-2" in terminal.output, timeout=60, what="the paste")
    assert str(len(paste)).encode() in terminal.output, terminal.output[-300:]
    assert target.stat().st_size == len(paste)
    terminal.type("exit\r")
    terminal.message("exit")
    session = wait_until(lambda: TerminalSession.objects.filter(state="closed").first(), message="the closed row")
    assert session.bytes_in > len(paste)


def test_killing_the_agent_mid_session_ends_it_and_keeps_the_recording(live_url, terminal_drone):
    terminal = Terminal(live_url, "term-1", cookie=session_cookie(staff_user("watcher")))
    terminal.message("opened")
    terminal.type("echo before-the-kill\r")
    terminal.read_until(lambda: terminal.output.count(b"before-the-kill") >= 2, what="the echo")
    terminal_drone.kill()
    ended = terminal.message("exit", timeout=15)
    assert ended["reason"] == "the agent disconnected" and ended["exit_status"] is None
    session = wait_until(lambda: TerminalSession.objects.filter(state="closed").first(), message="the closed row")
    assert session.end_reason == "the agent disconnected" and session.recording_sha256
    assert session.recording_size > 0


def test_the_per_drone_limit_refuses_one_more_session(live_url, terminal_drone, settings):
    cookie = session_cookie(staff_user("greedy"))
    terminals = []
    for _ in range(settings.SWARM_TERMINAL_MAX_SESSIONS_PER_DRONE):
        terminals.append(Terminal(live_url, "term-1", cookie=cookie))
        terminals[-1].message("opened")
    extra = Terminal(live_url, "term-1", cookie=cookie)
    refusal = extra.message("error")
    assert "limit" in refusal["detail"]
    assert TerminalSession.objects.filter(state="refused", username="greedy").count() == 1
    for terminal in terminals:
        terminal.close()


def test_browser_and_agent_on_different_replicas(live_url, subprocess_environment, tmp_path, start_agent, join_token):
    """The agent's socket is on the session's live server, the browser's on a second uvicorn process."""
    from conftest import LiveServer

    second = LiveServer(subprocess_environment, tmp_path / "replica-2.log")
    try:
        start_agent("term-2", join_token)
        wait_until(lambda: Drone.objects.filter(name="term-2", ws_connected=True).exists(), message="the agent")
        terminal = Terminal(second.url, "term-2", cookie=session_cookie(staff_user("roamer")))
        terminal.message("opened")
        terminal.type("echo across-$((40+2))\r")
        terminal.read_until(lambda: b"across-42" in terminal.output, what="the echo through the channel layer")
        terminal.type("exit\r")
        assert terminal.message("exit")["exit_status"] == 0
    finally:
        second.stop()
