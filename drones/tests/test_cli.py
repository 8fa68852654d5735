"""`swarmctl drone` against a real server and a real agent."""
import os
import subprocess
import sys

import pytest

from drones.models import Drone, EscalationEvent
from drones.tests.conftest import wait_until

pytestmark = pytest.mark.live


def swarmctl(url, token, *args):
    env = dict(os.environ, SWARM_URL=url, SWARM_TOKEN=token)
    result = subprocess.run([sys.executable, "-m", "swarm_agent.cli_ctl", "drone", *args], env=env,
                            capture_output=True, text=True, timeout=60)
    return result


def test_drone_commands_list_ping_hold_and_show_the_ladder(live_url, start_agent, join_token, admin_api, read_api):
    start_agent("cli-1", join_token, extra=["--labels", "linux", "--drone-type", "lxc"])
    drone = wait_until(lambda: Drone.objects.filter(name="cli-1", ws_connected=True).first(),
                       message="the agent's WebSocket")

    listed = swarmctl(live_url, read_api.token, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("cli-1\t"))
    assert "\tonline\tL0\tlxc\tws up\t" in line and "labels linux" in line
    assert swarmctl(live_url, read_api.token, "list", "--status", "paused").stdout.strip() == \
        "no drones with status paused"

    pong = swarmctl(live_url, admin_api.token, "ping", "cli-1")
    assert pong.returncode == 0 and "cli-1: pong in" in pong.stdout, (pong.stdout, pong.stderr)

    assert swarmctl(live_url, read_api.token, "pause", "cli-1").returncode == 1, "read tokens change nothing"
    paused = swarmctl(live_url, admin_api.token, "pause", "cli-1")
    assert paused.returncode == 0 and paused.stdout.strip() == "cli-1: paused, L0"
    assert Drone.objects.get(pk=drone.pk).status == "paused"
    assert swarmctl(live_url, admin_api.token, "resume", "cli-1").stdout.strip() == "cli-1: online, L0"

    EscalationEvent.objects.create(drone=drone, level=1, action="restart_service", result="sent",
                                   detail="stale: test")
    steps = swarmctl(live_url, read_api.token, "escalation", "cli-1")
    assert steps.returncode == 0 and "\tcli-1\tL1 restart_service\tsent\tstale: test" in steps.stdout

    missing = swarmctl(live_url, admin_api.token, "ping", "nope")
    assert missing.returncode == 1 and "not_found" in missing.stderr
