"""The drone runtime with real processes: API → Celery worker → a real `swarm-agent run` over HTTP and WebSocket
→ `swarm-agent boot` in the drone's bubblewrap sandbox → API."""
from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from drones.tests.conftest import AgentProcess
from workflows.tests.conftest import events_of, publish, wait_finished, wait_for

pytestmark = pytest.mark.live

LONG_ENTRYPOINT = """
import time
print("working", flush=True)
time.sleep(120)
print("done")
"""
HELLO_ENTRYPOINT = """
import os
print("hello from " + os.environ.get("WHO", "?"))
"""
AGENT_ENV = {"SWARM_AGENT_EXECUTION_POLL_INTERVAL": "1", "SWARM_AGENT_BUILD_POLL_INTERVAL": "30"}


@pytest.fixture
def join_token(db):
    from drones.services import join_token_issue

    return join_token_issue(name="drone-runtime")[1]


@pytest.fixture
def drones(live_system, tmp_path, join_token):
    """`drones(name, labels=...)` starts a real agent; all are stopped, and their executions' supervisors killed."""
    agents: list[AgentProcess] = []

    def start(name: str, *, labels: str = "exec") -> AgentProcess:
        agent = AgentProcess(live_system.url, tmp_path / f"agent-{name}", name=name, join_token=join_token,
                             log_path=tmp_path / f"agent-{name}.log", extra=["--labels", labels],
                             env=AGENT_ENV)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
        for state in supervisors_of(agent).values():
            try:
                os.kill(state["supervisor_pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def supervisors_of(agent: AgentProcess) -> dict:
    try:
        return json.loads((agent.state_dir / "executions.json").read_text())
    except (OSError, ValueError):
        return {}


def connected(*names: str):
    from drones.models import Drone

    return wait_for(lambda: Drone.objects.filter(name__in=names, ws_connected=True).count() == len(names),
                    timeout=30, message=f"drones {names} to connect")


def spawn(api, workflow, **body) -> dict:
    response = api.post(f"/workflows/{workflow.pk}/executions", json={"runtime": "drone", **body})
    assert response.status_code == 202, response.text
    return response.json()


def test_spawn_on_a_drone_end_to_end_with_output(live_system, admin_api, engine_token, drones):
    workflow = publish(admin_api, {"main.py": HELLO_ENTRYPOINT}, drone_labels=["exec"])
    agent = drones("exec-1", labels="exec,linux")
    connected("exec-1")
    with live_system.api(engine_token) as api:
        body = spawn(api, workflow, env={"WHO": "a drone"})
        finished = wait_finished(api, body["id"])
        events = events_of(api, body["id"])
        assert finished["status"] == "succeeded", (finished, events)
        assert finished["drone"] == "exec-1" and finished["required_labels"] == ["exec"]
        types = [event["type"] for event in events if event["type"] != "output"]
        assert types[:4] == ["spawn_requested", "queued", "runtime_started", "metadata_served"], types
        assert "exited" in types
        claimed = next(e for e in events if e["type"] == "runtime_started")
        assert claimed["data"]["drone"] == "exec-1" and claimed["data"]["sandbox"] == "bwrap", claimed
        assert [e["message"] for e in events if e["type"] == "output"] == ["hello from a drone"]
        # The drone's supervisor reported how the sandbox ended, with its own runtime token.
        exited = wait_for(lambda: [e for e in events_of(api, body["id"]) if e["type"] == "runtime_exited"],
                          message="runtime_exited")
        assert exited[0]["data"]["kind"] == "process" and exited[0]["data"]["returncode"] == 0
    assert "execution %s started (sandbox bwrap" % body["id"] in agent.log_text()


def test_labels_mismatch_waits_queued_with_the_reason_then_times_out(live_system, admin_api, engine_token, drones,
                                                                      settings):
    from workflows.models import Execution
    from workflows.services import executions_reap

    workflow = publish(admin_api, {"main.py": HELLO_ENTRYPOINT})
    drones("exec-plain", labels="exec")
    connected("exec-plain")
    with live_system.api(engine_token) as api:
        body = spawn(api, workflow, labels=["gpu", "exec"])
        queued = wait_for(lambda: (lambda b: b if b["status"] == "queued" else None)(
            api.get(f"/executions/{body['id']}").json()), message="queued")
        waiting = queued["waiting"]
        assert waiting["required_labels"] == ["exec", "gpu"]
        assert waiting["drones_connected"] >= 1 and waiting["drones_matching"] == 0, waiting
        assert "exec, gpu" in waiting["reason"] and "connected drone" in waiting["reason"], waiting
        # The agent polls every second: still nobody may take it.
        import time

        time.sleep(2.5)
        assert api.get(f"/executions/{body['id']}").json()["status"] == "queued"
        # Past its boot + run limit, the reaper times it out, saying it was still queued and why.
        Execution.objects.filter(pk=body["id"]).update(deadline_at=Execution.objects.get(pk=body["id"]).created_at)
        executions_reap()
        finished = api.get(f"/executions/{body['id']}").json()
        assert finished["status"] == "timed_out" and finished["waiting"] is None
        timed_out = [e for e in events_of(api, body["id"]) if e["type"] == "timed_out"][0]
        assert "while queued for a drone" in timed_out["message"] and "exec, gpu" in timed_out["message"]


def test_two_drones_race_for_one_execution_and_one_claims_it(live_system, admin_api, engine_token, drones):
    workflow = publish(admin_api, {"main.py": HELLO_ENTRYPOINT}, drone_labels=["exec"])
    first, second = drones("race-a"), drones("race-b")
    connected("race-a", "race-b")
    with live_system.api(engine_token) as api:
        body = spawn(api, workflow)
        assert wait_finished(api, body["id"])["status"] == "succeeded"
        claims = [e for e in events_of(api, body["id"]) if e["type"] == "runtime_started"]
        assert len(claims) == 1, claims
    winner = claims[0]["data"]["drone"]
    started = [agent.name for agent in (first, second) if f"execution {body['id']} started" in agent.log_text()]
    assert started == [winner]


def test_claims_racing_in_the_database_hand_the_execution_out_once(transactional_db, tenant, admin_api):
    """Many threads (two drones, each claiming from several connections at once) for one queued execution."""
    from drones.tests.conftest import register_drone
    from swarm.core.principals import system_principal
    from workflows.services import execution_provision, execution_spawn
    from workflows.services.drone_executions import execution_drone_claim

    workflow = publish(admin_api, {"main.py": HELLO_ENTRYPOINT}, drone_labels=["exec"])
    drone_a, _ = register_drone("db-race-a", labels=["exec"], capacity=4)
    drone_b, _ = register_drone("db-race-b", labels=["exec"], capacity=4)
    execution = execution_spawn(principal=system_principal("test"), workflow=workflow, runtime="drone")
    execution_provision(execution_id=execution.pk)
    barrier = threading.Barrier(8)
    results = []

    def claim(drone_id):
        from django.db import connection

        barrier.wait()
        try:
            results.append((drone_id, execution_drone_claim(drone_id=drone_id, execution_id=execution.pk)))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(drone.pk,)) for drone in (drone_a, drone_b) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [(drone_id, payload) for drone_id, payload in results if payload is not None]
    assert len(results) == 8 and len(winners) == 1, results
    execution.refresh_from_db()
    assert execution.status == "provisioning" and execution.drone_id == winners[0][0]
    assert execution.events.filter(type="runtime_started").count() == 1


def test_sigkill_the_drone_mid_run_fails_the_execution_drone_lost(live_system, admin_api, engine_token, drones,
                                                                  settings):
    from workflows.models import Execution
    from workflows.services import executions_reap

    workflow = publish(admin_api, {"main.py": LONG_ENTRYPOINT}, drone_labels=["exec"])
    agent = drones("doomed")
    connected("doomed")
    with live_system.api(engine_token) as api:
        body = spawn(api, workflow)
        wait_for(lambda: any(e["type"] == "output" and e["message"] == "working" for e in events_of(api, body["id"])),
                 message="the workflow's first output")
        assert api.get(f"/executions/{body['id']}").json()["status"] == "running"
        agent.kill()
        settings.SWARM_DRONE_EXECUTION_LEASE_SECONDS = 3

        def lost():
            executions_reap()
            return Execution.objects.get(pk=body["id"]).status == "failed"

        wait_for(lost, timeout=20, interval=0.5, message="drone_lost")
        finished = api.get(f"/executions/{body['id']}").json()
        assert finished["status"] == "failed"
        error = [e for e in events_of(api, body["id"]) if e["type"] == "error"][-1]
        assert error["data"]["code"] == "drone_lost" and error["data"]["drone"] == "doomed", error
        assert "drone_lost: drone doomed" in error["message"]
        # Its token died with it: the orphaned boot can report nothing more.
        assert not Execution.objects.filter(pk=body["id"], status__in=["running", "booting"]).exists()


def test_cancel_tells_the_drone_to_kill_it(live_system, admin_api, engine_token, drones):
    from swarm_agent.supervisor import is_running

    workflow = publish(admin_api, {"main.py": LONG_ENTRYPOINT}, drone_labels=["exec"])
    agent = drones("cancel-me")
    connected("cancel-me")
    with live_system.api(engine_token) as api:
        body = spawn(api, workflow)
        wait_for(lambda: any(e["type"] == "output" for e in events_of(api, body["id"])), message="first output")
        supervisor = supervisors_of(agent)[str(body["id"])]
        assert is_running(supervisor["supervisor_pid"], supervisor["supervisor_start_time"])
        response = api.post(f"/executions/{body['id']}/cancel")
        assert response.status_code == 202, response.text
        assert api.get(f"/executions/{body['id']}").json()["status"] == "cancelled"
        wait_for(lambda: not is_running(supervisor["supervisor_pid"], supervisor["supervisor_start_time"]),
                 timeout=20, message="the drone to stop the sandbox")
        exited = wait_for(lambda: [e for e in events_of(api, body["id"]) if e["type"] == "runtime_exited"],
                          message="runtime_exited")
        assert exited[0]["data"]["code"] == "stopped", exited
    assert f"stopping execution {body['id']}" in agent.log_text()


def test_a_spawn_naming_labels_off_the_drone_runtime_is_refused(admin_api, engine_api):
    workflow = publish(admin_api, {"main.py": HELLO_ENTRYPOINT})
    response = engine_api.post(f"/api/v1/workflows/{workflow.pk}/executions",
                               {"runtime": "process", "labels": ["gpu"]}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "labels", response.content
    response = engine_api.post(f"/api/v1/workflows/{workflow.pk}/executions",
                               {"runtime": "drone", "labels": "gpu"}, format="json")
    assert response.status_code == 400 and response.json()["field"].startswith("labels"), response.content


def test_swarmctl_run_on_the_drone_runtime_follows_to_the_exit_code(live_system, admin_api, engine_token, drones):
    from workflows.tests.test_swarmctl import swarmctl

    publish(admin_api, {"main.py": HELLO_ENTRYPOINT + "raise SystemExit(4)\n"})
    drones("ctl-drone", labels="exec,ctl")
    connected("ctl-drone")
    result = swarmctl("run", "acme/hello", "--runtime", "drone", "--label", "ctl", "--env", "WHO=swarmctl",
                      "--follow", url=live_system.url, token=engine_token, check=False)
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert "hello from swarmctl" in result.stdout
    assert "on the drone runtime" in result.stderr and "[queued]" in result.stderr, result.stderr
    assert "claimed by drone ctl-drone (sandbox: bwrap)" in result.stderr, result.stderr


def test_with_the_websocket_down_the_drone_claims_by_its_poll(live_system, admin_api, engine_token, tmp_path,
                                                              join_token):
    from drones.models import Drone

    workflow = publish(admin_api, {"main.py": HELLO_ENTRYPOINT}, drone_labels=["exec"])
    agent = AgentProcess(live_system.url, tmp_path / "agent-http", name="http-only", join_token=join_token,
                         log_path=tmp_path / "agent-http.log", extra=["--labels", "exec", "--no-websocket"],
                         env=AGENT_ENV)
    try:
        wait_for(lambda: Drone.objects.filter(name="http-only", last_heartbeat_at__isnull=False).exists(),
                 message="the HTTP-only drone to heartbeat")
        with live_system.api(engine_token) as api:
            body = spawn(api, workflow, env={"WHO": "the poll"})
            finished = wait_finished(api, body["id"])
            assert finished["status"] == "succeeded" and finished["drone"] == "http-only", finished
            assert "hello from the poll" in [e["message"] for e in events_of(api, body["id"]) if e["type"] == "output"]
        assert not Drone.objects.get(name="http-only").ws_connected
    finally:
        agent.stop()


def test_the_admin_page_of_a_queued_drone_execution_says_why_it_waits(admin_client_, tenant, admin_api):
    from django.urls import reverse

    from swarm.core.principals import system_principal
    from workflows.services import execution_provision, execution_spawn

    workflow = publish(admin_api, {"main.py": HELLO_ENTRYPOINT}, drone_labels=["gpu"])
    execution = execution_spawn(principal=system_principal("test"), workflow=workflow, runtime="drone")
    execution_provision(execution_id=execution.pk)
    page = admin_client_.get(reverse("admin:workflows_execution_change", args=[execution.pk])).content.decode()
    assert 'id="execution-waiting"' in page and "no drone is connected (the execution needs labels gpu)" in page
