"""The operator console in a real Chromium: a terminal to a real agent and its replay, then the topology
following the agent's death through the ladder live, and the scrubber showing the fleet before it."""
import json
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from drones.models import Drone, EscalationEvent, TerminalSession
from drones.tests.conftest import run_ladder_until, wait_until
from drones.tests.test_admin_browser import _login

pytestmark = [pytest.mark.browser, pytest.mark.live]

CYAN, YELLOW, AMBER = "#06b6d4", "#eab308", "#f59e0b"


def _wait_colour(page, name: str, colour: str, timeout: float = 30_000):
    """The node is drawn in `colour`: by the page's own state and by the pixel at its centre on the canvas."""
    page.wait_for_function("([name, colour]) => window.swarmTopology && swarmTopology.nodeColour(name) === colour",
                           arg=[name, colour], timeout=timeout)
    page.wait_for_function("([name, colour]) => swarmTopology.nodeShows(name, colour)", arg=[name, colour],
                           timeout=5_000)


def _ladder_until(predicate, message: str):
    """Run the beat task's body until `predicate()` (in a thread: Playwright keeps an event loop on this one)."""
    outcome = {}

    def work():
        try:
            run_ladder_until(predicate, message=message)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = error
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(90)
    if "error" in outcome:
        raise outcome["error"]


def test_terminal_replay_and_topology_through_the_ladder(live_url, start_agent, join_token, browser_page,
                                                         short_ladder):
    agent = start_agent("console-1", join_token, extra=["--drone-type", "qemu", "--terminal-shell", "/bin/bash"])
    drone = wait_until(lambda: Drone.objects.filter(name="console-1", ws_connected=True).first(), message="the agent")
    # Registered half an hour ago: the scrubber can then go back to a moment the drone existed, before the kill.
    Drone.objects.filter(pk=drone.pk).update(registered_at=timezone.now() - timedelta(minutes=30))
    page = browser_page
    _login(page, live_url)

    # A terminal from the drone's page: type, see the output, the session ends with the shell.
    page.goto(f"{live_url}/admin/drones/drone/{drone.pk}/change/")
    page.click("#open-terminal")
    page.wait_for_url(f"**/admin/drones/drone/{drone.pk}/terminal/")
    page.wait_for_function("() => document.getElementById('terminal-status').textContent.startsWith('connected')")
    page.click("#terminal-box")
    page.keyboard.type("echo hello; exit\n")
    page.wait_for_function("() => window.swarmTerminal.ended()")
    lines = page.evaluate("swarmTerminal.text()").splitlines()
    assert "hello" in [line.strip() for line in lines], lines
    assert "exit status 0" in page.text_content("#terminal-status")
    session = wait_until(lambda: TerminalSession.objects.filter(state="closed", recording_sha256__gt="").first(),
                         message="the recorded session")

    # Its replay in the admin's player shows the same bytes; the download is the same cast.
    page.click("#terminal-recording")
    page.wait_for_url(f"**/admin/drones/terminalsession/{session.pk.hex}/change/")
    page.wait_for_function("() => document.getElementById('recording-player').innerText.includes('hello')", timeout=20_000)
    cast = page.request.get(live_url + page.get_attribute("#recording-download", "href"))
    assert cast.status == 200 and "attachment" in cast.headers["content-disposition"]
    header, *events = [json.loads(line) for line in cast.text().splitlines()]
    shown = "".join(event[2] for event in events if event[1] == "o")
    assert header["version"] == 2 and "echo hello; exit" in shown and "\rhello\r\n" in shown
    assert len(cast.body()) == session.recording_size

    # The topology: cyan while healthy; the agent dies; the ladder's steps turn the node yellow, then amber.
    page.goto(f"{live_url}/admin/drones/drone/topology/")
    _wait_colour(page, "console-1", CYAN)
    page.wait_for_function("() => swarmTopology.stats().heartbeats_drawn > 0", timeout=10_000)  # packets flow
    page.wait_for_function("() => swarmTopology.stats().wave_bars > 0", timeout=10_000)  # and the waveform draws them
    agent.kill()
    _ladder_until(lambda: EscalationEvent.objects.filter(drone=drone, level=1).exists(), message="L1")
    _wait_colour(page, "console-1", YELLOW)
    _ladder_until(lambda: EscalationEvent.objects.filter(drone=drone, level=2).exists(), message="L2")
    _wait_colour(page, "console-1", AMBER)
    page.wait_for_function("() => document.getElementById('healing-rows').innerText.includes('hard_restart')")
    assert page.locator("#healing-rows").inner_text().count("console-1") >= 2
    assert page.text_content("[data-topo-card=escalating]") == "1"
    assert page.evaluate("swarmTopology.mode()") == "live"

    # Drag the scrubber back ten minutes (before the kill): the node is cyan as it was; then back to live.
    page.locator("#topology-scrubber").scroll_into_view_if_needed()
    box = page.locator("#topology-scrubber").bounding_box()
    thumb_x, y = box["x"] + box["width"] - 4, box["y"] + box["height"] / 2
    page.mouse.move(thumb_x, y)
    page.mouse.down()
    page.mouse.move(thumb_x - box["width"] * 10 / 60, y, steps=8)
    page.mouse.up()
    page.wait_for_function("() => swarmTopology.mode() === 'history'")
    page.screenshot(path="/tmp/topo-history.png", full_page=True)
    _wait_colour(page, "console-1", CYAN, timeout=10_000)
    assert "as at" in page.text_content("#scrub-label")
    page.click("#scrub-live")
    _wait_colour(page, "console-1", AMBER, timeout=10_000)
