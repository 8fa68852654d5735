"""A drone's system log in the admin: tailed by a real agent, relayed through a real server, filtered on the drone."""
from __future__ import annotations

import json
import time

import pytest
import websockets
from django.contrib.auth.models import Permission
from websockets.sync.client import connect

from drones.models import Drone
from drones.tests.conftest import wait_until
from drones.tests.test_terminal_live import session_cookie, staff_user

pytestmark = pytest.mark.live


def _messages_until(socket, predicate, timeout=20.0) -> list[dict]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(json.loads(socket.recv(timeout=1)))
        except TimeoutError:
            continue
        if predicate(seen):
            return seen
    raise AssertionError(f"timed out; got {seen}")


def _lines(messages) -> list[str]:
    return [line for message in messages if message["type"] == "lines" for line in message["lines"]]


def test_the_system_log_is_tailed_through_the_agent_and_filtered(live_url, start_agent, join_token, tmp_path):
    log_file = tmp_path / "system.log"
    log_file.write_text("".join(f"boot line {index}\n" for index in range(5)) + "kernel: disk error on sda\n")
    start_agent("syslog-1", join_token, extra=["--syslog-file", str(log_file)])
    wait_until(lambda: Drone.objects.filter(name="syslog-1", ws_connected=True).exists(), message="the agent")
    reader = staff_user("reader", permitted=False)
    url = live_url.replace("http://", "ws://") + "/ws/syslog/syslog-1/"

    with pytest.raises(websockets.InvalidStatus):  # staff, but without drones.view_drone_syslog
        connect(url, additional_headers={"Cookie": f"sessionid={session_cookie(reader)}"}, open_timeout=10).__enter__()

    reader.user_permissions.add(Permission.objects.get(codename="view_drone_syslog"))
    with connect(url, additional_headers={"Cookie": f"sessionid={session_cookie(reader)}"}, open_timeout=10) as socket:
        seen = _messages_until(socket, lambda seen: "kernel: disk error on sda" in _lines(seen))
        assert any(message["type"] == "started" and "tail" in message["source"] for message in seen)
        assert _lines(seen)[:2] == ["boot line 0", "boot line 1"], "the backlog comes first, in order"
        with log_file.open("a") as handle:
            handle.write("a new line while watching\n")
        _messages_until(socket, lambda seen: "a new line while watching" in _lines(seen))

        socket.send(json.dumps({"type": "filter", "text": "ERROR"}))
        filtered = _messages_until(socket, lambda seen: "kernel: disk error on sda" in _lines(seen))
        after_reset = filtered[max(index for index, message in enumerate(filtered) if message["type"] == "reset"):]
        assert _lines(after_reset) == ["kernel: disk error on sda"], "the filter applies on the drone, case-insensitively"
