"""Faults with real agent processes: the ladder climbs, respects cooldowns, alerts, and resets."""
import signal
import threading

import httpx
import pytest
from django.db import connection

from drones.models import Drone, EscalationEvent, Hypervisor
from drones.tests.conftest import run_ladder_until, wait_until

pytestmark = pytest.mark.live


def _started(start_agent, name, join_token, drone_type):
    agent = start_agent(name, join_token, extra=["--drone-type", drone_type])
    wait_until(lambda: Drone.objects.filter(name=name, first_heartbeat_at__isnull=False, ws_connected=True).exists(),
               message=f"{name} to heartbeat and connect its WebSocket")
    return agent, Drone.objects.get(name=name)


def _attach_hypervisor(drone, fake_proxmox, vmid=105):
    hypervisor = Hypervisor(name="pve-test", url=fake_proxmox.url, token_id=fake_proxmox.token_id, verify_tls=False)
    hypervisor.token_secret = fake_proxmox.token_secret
    hypervisor.save()
    Drone.objects.filter(pk=drone.pk).update(hypervisor=hypervisor, hypervisor_node="pve1", hypervisor_vmid=vmid)


def _steps(drone):
    return list(EscalationEvent.objects.filter(drone=drone).order_by("at", "id"))


def test_killed_lxc_agent_climbs_l1_to_l4_then_heals(live_url, start_agent, join_token, short_ladder, fake_proxmox,
                                                      fake_smtp, fake_webhook):
    agent, drone = _started(start_agent, "lxc-1", join_token, "lxc")
    _attach_hypervisor(drone, fake_proxmox)
    run_ladder_until(lambda: not _steps(drone) and Drone.objects.get(pk=drone.pk).status == "online", timeout=5,
                     message="a healthy check before the fault")

    agent.kill()
    run_ladder_until(lambda: EscalationEvent.objects.filter(drone=drone, level=4).exists(),
                     message="L4 after killing the agent")
    steps = _steps(drone)
    assert [(step.level, step.action) for step in steps] == [
        (1, "restart_service"), (2, "hard_restart"), (3, "reboot_container"), (4, "alert_admin")]
    cooldowns = short_ladder.SWARM_ESCALATION_COOLDOWNS
    for earlier, later in zip(steps, steps[1:]):
        assert (later.at - earlier.at).total_seconds() >= cooldowns[earlier.level]
    assert steps[0].result == "failed" and "no SSH" in steps[0].detail  # the WebSocket died with the agent
    assert steps[2].result == "ok", steps[2].detail
    assert fake_proxmox.reboots == [{
        "path": "/api2/json/nodes/pve1/lxc/105/status/reboot",
        "authorization": f"PVEAPIToken={fake_proxmox.token_id}={fake_proxmox.token_secret}",
        "status": 200, "node": "pve1", "kind": "lxc", "vmid": "105"}]
    assert steps[3].result == "ok", steps[3].detail
    assert len(fake_smtp.messages) == 1
    mail = fake_smtp.messages[0]
    assert mail["to"] == ["ops@example.test"]
    assert "lxc-1" in mail["message"]["Subject"]
    assert len(fake_webhook.requests) == 1
    assert fake_webhook.requests[0]["path"] == "/hooks/swarm"
    assert fake_webhook.requests[0]["json"]["drone"] == "lxc-1"
    assert "lxc-1" in fake_webhook.requests[0]["json"]["text"]

    # L4's cooldown (60 s here) holds further alerts off.
    for _ in range(4):
        run_ladder_until(lambda: True, timeout=1)
    assert EscalationEvent.objects.filter(drone=drone).count() == 4

    # Restart the agent: it reuses its saved token, the drone is online again, and after the healthy
    # period the level resets.
    agent.start()
    run_ladder_until(lambda: Drone.objects.get(pk=drone.pk).escalation_level == 0, message="the reset")
    drone.refresh_from_db()
    assert drone.status == "online"
    reset = _steps(drone)[-1]
    assert (reset.action, reset.result, reset.level) == ("reset", "reset", 0)
    assert drone.escalation_attempts == 0


def test_bare_metal_drone_is_never_rebooted(live_url, start_agent, join_token, short_ladder, fake_proxmox,
                                            fake_smtp, fake_webhook):
    agent, drone = _started(start_agent, "metal-1", join_token, "bare-metal")
    _attach_hypervisor(drone, fake_proxmox, vmid=200)  # even if someone configured one
    agent.kill()
    run_ladder_until(lambda: EscalationEvent.objects.filter(drone=drone, level=4).exists(),
                     message="L4 for the bare-metal drone")
    assert [step.level for step in _steps(drone)] == [1, 2, 4]
    assert fake_proxmox.requests == []
    assert len(fake_smtp.messages) == 1 and len(fake_webhook.requests) == 1


def test_dropped_websocket_keeps_drone_online_but_missed_pongs_escalate(live_url, start_agent, join_token,
                                                                         short_ladder, admin_api):
    short_ladder.SWARM_DRONE_STALE_AFTER_MISSED = 5  # on a busy machine a late heartbeat must not pre-empt the pongs
    agent, drone = _started(start_agent, "ws-drop-1", join_token, "qemu")
    agent.signal(signal.SIGUSR1)  # the agent drops its WebSocket and keeps heartbeating over HTTP
    wait_until(lambda: not Drone.objects.get(pk=drone.pk).ws_connected, message="the WebSocket to drop")

    response = httpx.post(f"{live_url}/api/v1/drones/ws-drop-1/ping",
                          headers={"Authorization": f"Bearer {admin_api.token}"}, timeout=30)
    assert response.status_code == 200
    assert response.json()["ok"] is False

    run_ladder_until(lambda: EscalationEvent.objects.filter(drone=drone).exists(),
                     message="the ladder to act on missed pongs")
    drone.refresh_from_db()
    assert drone.status == "online"  # heartbeats kept it online
    assert drone.missed_pongs >= 3
    first = _steps(drone)[0]
    assert (first.level, first.action) == (1, "restart_service")
    assert "missed pongs" in first.detail

    # The WebSocket comes back: pongs flow again and the level resets after the healthy period.
    agent.signal(signal.SIGUSR2)
    run_ladder_until(lambda: Drone.objects.get(pk=drone.pk).escalation_level == 0,
                     message="recovery once the WebSocket is back")
    assert Drone.objects.get(pk=drone.pk).missed_pongs == 0


def test_two_ladder_runs_at_once_never_double_act(live_url, start_agent, join_token, short_ladder):
    agent, drone = _started(start_agent, "race-1", join_token, "lxc")
    agent.kill()
    short_ladder.SWARM_ESCALATION_COOLDOWNS = {1: 60.0, 2: 60.0, 3: 60.0, 4: 60.0}
    wait_until(lambda: Drone.objects.get(pk=drone.pk).last_heartbeat_at is not None, message="a heartbeat")
    import time

    time.sleep(2.5)  # past 2 missed heartbeats: the drone is stale

    from drones.ladder import drone_evaluate

    barrier = threading.Barrier(4)
    outcomes = []

    def worker():
        try:
            barrier.wait()
            for _ in range(10):
                outcomes.append(drone_evaluate(drone_id=drone.pk).outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert EscalationEvent.objects.filter(drone=drone).count() == 1
    assert outcomes.count("acted") == 1
    assert set(outcomes) <= {"acted", "waiting", "locked"}
