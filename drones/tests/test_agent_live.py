"""A real `swarm-agent run` against a real uvicorn server: register, heartbeat, WebSocket, ping."""
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
    import httpx

    response = httpx.post(f"{live_url}/api/v1/drones/live-1/ping",
                          headers={"Authorization": f"Bearer {admin_api.token}"}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True, (body, agent.log_text())
    assert 0 < body["latency_ms"] < 5000
    drone.refresh_from_db()
    assert drone.ping_latency_ms == body["latency_ms"]
