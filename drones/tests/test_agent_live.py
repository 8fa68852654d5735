"""A real `swarm-agent run` against a real uvicorn server: register, heartbeat, WebSocket, ping."""
import httpx
import pytest

from drones.models import Drone, JoinToken
from drones.tests.conftest import wait_until

pytestmark = pytest.mark.live


def test_agent_registers_heartbeats_and_answers_ping(live_url, start_agent, join_token, admin_api):
    agent = start_agent("live-1", join_token, extra=["--labels", "linux,x86", "--drone-type", "lxc"])
    drone = wait_until(lambda: Drone.objects.filter(name="live-1", first_heartbeat_at__isnull=False).first(),
                       message="the first heartbeat")
    assert drone.labels == ["linux", "x86"]
    assert drone.drone_type == "lxc"
    assert drone.metrics["cpu_count"] >= 1
    assert JoinToken.objects.get(name="test-join").provisioning_status == "heartbeat"
    wait_until(lambda: Drone.objects.get(pk=drone.pk).ws_connected, message="the WebSocket")
    response = httpx.post(f"{live_url}/api/v1/drones/live-1/ping",
                          headers={"Authorization": f"Bearer {admin_api.token}"}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True, (body, agent.log_text())
    assert 0 < body["latency_ms"] < 5000
    drone.refresh_from_db()
    assert drone.ping_latency_ms == body["latency_ms"]


def test_agent_with_revoked_join_token_is_refused(live_url, start_agent, join_token):
    from drones.services import join_token_revoke

    join_token_revoke(token=JoinToken.objects.get(name="test-join"))
    agent = start_agent("revoked-1", join_token)
    assert agent.process.wait(30) == 2
    assert "revoked" in agent.log_text()
    assert not Drone.objects.filter(name="revoked-1").exists()


def test_forged_drone_token_cannot_open_the_websocket(live_url, admin_api):
    import asyncio

    import websockets
    from websockets.asyncio.client import connect

    async def attempt(token):
        url = live_url.replace("http://", "ws://") + "/ws/agent/"
        try:
            async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10) as ws:
                await ws.recv()
        except (websockets.InvalidStatus, websockets.ConnectionClosed) as error:
            return error
        return None

    for token in ("swm_0badc0de_forgedforgedforgedforged", admin_api.token):
        error = asyncio.run(attempt(token))
        assert error is not None  # refused at the handshake (403) or closed with 4401
    assert not Drone.objects.filter(ws_connected=True).exists()


def test_bootstrap_script_installs_and_registers_the_agent(live_url, join_token, tmp_path):
    """Run the served script with sh: it downloads the agent package, pip-installs it into a venv and starts it."""
    import os
    import signal
    import site
    import subprocess
    import sys

    script = httpx.get(f"{live_url}/api/v1/provision/bootstrap", params={"token": join_token}, timeout=30)
    assert script.status_code == 200
    assert JoinToken.objects.get(name="test-join").provisioning_status == "script_fetched"
    agent_dir = tmp_path / "bootstrap"
    # Offline here: pre-create the venv the script would create and let it see the test venv's
    # dependencies (httpx, websockets) through a .pth file; the agent itself is installed by the script.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(agent_dir / "venv")], check=True)
    venv_site = next((agent_dir / "venv" / "lib").glob("python3*/site-packages"))
    (venv_site / "swarm-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (tmp_path / "script.sh").write_text(script.text)
    env = dict(os.environ, SWARM_AGENT_DIR=str(agent_dir), SWARM_DRONE_NAME="bootstrapped-1",
               SWARM_AGENT_PIP_ARGS="--no-deps --no-build-isolation --no-index")
    env.pop("VIRTUAL_ENV", None)
    log = open(tmp_path / "bootstrap.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(["sh", str(tmp_path / "script.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        drone = wait_until(lambda: Drone.objects.filter(name="bootstrapped-1", first_heartbeat_at__isnull=False).first(),
                           timeout=90, message="the bootstrapped agent's first heartbeat")
        assert JoinToken.objects.get(name="test-join").provisioning_status == "heartbeat"
        assert drone.agent_version
        installed = list((agent_dir / "venv" / "lib").glob("python3*/site-packages/swarm_agent/daemon.py"))
        assert installed, (tmp_path / "bootstrap.log").read_text()  # installed from the served package
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
        log.close()


def test_restart_commands_over_the_websocket(live_url, start_agent, join_token, tmp_path):
    """restart_service re-execs the agent (it reconnects); a configured hard_restart command is run."""
    from drones.events import drone_send

    marker = tmp_path / "hard-restarted"
    agent = start_agent("restart-1", join_token, extra=["--hard-restart-command", f"touch {marker}"])
    drone = wait_until(lambda: Drone.objects.filter(name="restart-1", ws_connected=True).first(),
                       message="the WebSocket")
    first_connection = drone.ws_connected_at
    drone_send(drone.pk, {"type": "restart_service", "id": "t1"})
    wait_until(lambda: Drone.objects.get(pk=drone.pk).ws_connected_at > first_connection
               and Drone.objects.get(pk=drone.pk).ws_connected, message="the re-executed agent to reconnect")
    assert "re-executing the agent" in agent.log_text()
    assert agent.process.poll() is None  # same process (exec), still running
    drone_send(drone.pk, {"type": "hard_restart", "id": "t2"})
    wait_until(marker.exists, message="the hard_restart command")


def test_heartbeat_stop_action_stops_the_agent(live_url, start_agent, join_token):
    agent = start_agent("stop-1", join_token)
    wait_until(lambda: Drone.objects.filter(name="stop-1", first_heartbeat_at__isnull=False).exists(),
               message="the first heartbeat")
    Drone.objects.filter(name="stop-1").update(stop_requested=True)
    assert agent.process.wait(30) == 0


def test_health_check_runs_in_a_real_celery_worker(live_url, celery_worker_process, join_token):
    from drones.models import EscalationEvent
    from drones.services import drone_register
    from drones.tasks import check_health

    drone = drone_register(join_token=join_token, name="celery-1", drone_type="bare-metal").drone
    Drone.objects.filter(pk=drone.pk).update(registered_at=drone.registered_at.replace(year=2020))
    check_health.delay()
    event = wait_until(lambda: EscalationEvent.objects.filter(drone=drone).first(), timeout=60,
                       message="the worker's ladder step")
    assert (event.level, event.action) == (1, "restart_service")
    assert Drone.objects.get(pk=drone.pk).status == "offline"
