"""Two uvicorn replicas, two Celery workers and one beat, as real processes (issue 16, "Scale-out, shown").

Commands (a ping, a build cancel, both end to end and the cancel's push seen on the
agent's socket) and live views cross replicas through the channel layer; claims
through both replicas never share a build; a SIGKILLed replica's agents move
to the other one by themselves through the balancer (swarm/core/tests/scaleout.py);
a SIGKILLed worker's task is redelivered and completes once; a second beat
stands by. The killing tests come last in the module: they restart what they
killed, but the earlier tests need not wait for it.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

import httpx
import pytest
import redis
from django.conf import settings
from django.utils import timezone

from builds.choices import BuildState
from builds.models import Build, BuildAttempt
from builds.services import attempt_log_iter, build_trigger, queues_ensure_defaults
from builds.tests.factories import make_drone, make_git_repo, make_job
from drones.models import Drone
from drones.tests.conftest import AgentProcess, wait_until
from swarm.core.tests.scaleout import scaleout  # noqa: F401 - the module's fixture

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def agents(tmp_path):
    """Start real agents against a given URL: `agents(url, name, labels=...)`; stopped after the test."""
    from drones.services import join_token_issue

    started: list[AgentProcess] = []

    def start(url: str, name: str) -> AgentProcess:
        _, join = join_token_issue(name=f"join-{name}")
        agent = AgentProcess(url, tmp_path / f"agent-{name}", name=name, join_token=join,
                             log_path=tmp_path / f"agent-{name}.log",
                             env={"SWARM_AGENT_BUILD_POLL_INTERVAL": "1"})
        started.append(agent)
        return agent

    queues_ensure_defaults()
    yield start
    for agent in started:
        agent.stop()


def connected_drone(name: str, *, after=None) -> Drone | None:
    drone = Drone.objects.filter(name=name, ws_connected=True).first()
    if drone and (after is None or drone.ws_connected_at > after):
        return drone
    return None


def admin_headers() -> dict:
    from conftest import token_client

    return {"Authorization": f"Bearer {token_client('admin').token}"}


def attempt_log(build_id: int, number: int = 1) -> str:
    attempt = BuildAttempt.objects.get(build_id=build_id, number=number)
    return b"".join(attempt_log_iter(attempt=attempt)).decode(errors="replace")


def test_ping_and_cancel_through_replica_a_reach_an_agent_on_replica_b(scaleout, agents, tmp_path):
    agent = agents(scaleout.replica_b.url, "on-b")
    drone = wait_until(lambda: connected_drone("on-b"), message="the agent's WebSocket on replica B")
    headers = admin_headers()
    response = httpx.post(f"{scaleout.replica_a.url}/api/v1/drones/on-b/ping", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True, (response.json(), agent.log_text()[-2000:])

    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    build = build_trigger(job=make_job(scm_url=f"file://{tmp_path / 'repo'}", steps=["echo begin; sleep 4253"]),
                          trigger="api")
    wait_until(lambda: Build.objects.get(pk=build.pk).state == BuildState.RUNNING, message="the build running on B")
    response = httpx.post(f"{scaleout.replica_a.url}/api/v1/builds/{build.pk}/cancel", headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    done = wait_until(lambda: Build.objects.filter(pk=build.pk, state__in=[
        BuildState.CANCELED, BuildState.FAILED, BuildState.SUCCESS]).first(), timeout=20, message="the cancel")
    assert done.state == BuildState.CANCELED and done.drone_id == drone.pk, agent.log_text()[-3000:]


def test_a_cancel_through_replica_a_is_pushed_over_the_websocket_held_by_replica_b(scaleout):
    """The cancel above could also reach the agent by its own polling; this socket only hears the push."""
    from websockets.asyncio.client import connect

    queues_ensure_defaults()
    drone, client = make_drone("raw-on-b")
    build = build_trigger(job=make_job(), trigger="api")
    claimed = httpx.post(f"{scaleout.replica_b.url}/api/v1/builds/request", json={"free_slots": 1},
                         headers={"Authorization": f"Bearer {client.token}"}, timeout=30)
    assert claimed.status_code == 201 and claimed.json()["id"] == build.pk, claimed.text
    headers = admin_headers()

    async def listen() -> dict:
        async with connect(f"ws://127.0.0.1:{scaleout.replica_b.port}/ws/agent/", open_timeout=10,
                           additional_headers={"Authorization": f"Bearer {client.token}"}) as socket:
            await asyncio.sleep(0.5)  # the consumer has joined the drone's group
            response = await asyncio.to_thread(httpx.post, f"{scaleout.replica_a.url}/api/v1/builds/{build.pk}/cancel",
                                               headers=headers, timeout=30)
            assert response.status_code == 202, response.text
            while True:
                message = json.loads(await asyncio.wait_for(socket.recv(), 10))
                if message.get("type") == "cancel_build":
                    return message

    message = asyncio.run(listen())
    assert message["build_id"] == build.pk


def test_topology_on_replica_a_shows_heartbeats_received_by_replica_b(scaleout, agents, operator):
    from django.test import Client
    from websockets.asyncio.client import connect

    browser = Client()
    browser.force_login(operator)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    ws_url = f"ws://127.0.0.1:{scaleout.replica_a.port}/ws/topology/"
    seen: list[dict] = []

    async def watch(drone_ids: asyncio.Future) -> bool:
        async with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": scaleout.replica_a.url},
                           open_timeout=10) as socket:
            snapshot = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert "drones" in snapshot
            ready.set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    frame = json.loads(await asyncio.wait_for(socket.recv(), 1))
                except asyncio.TimeoutError:
                    continue
                seen.append(frame)
                if drone_ids.done() and drone_ids.result() in frame.get("hb", []):
                    return True
        return False

    ready = threading.Event()
    result: dict = {}

    def run():
        async def main():
            drone_id = asyncio.get_running_loop().create_future()
            result["future"], result["loop"] = drone_id, asyncio.get_running_loop()
            result["found"] = await watch(drone_id)
        asyncio.run(main())

    watcher = threading.Thread(target=run, daemon=True)
    watcher.start()
    assert ready.wait(20), "the topology page on replica A did not open"
    agents(scaleout.replica_b.url, "watched-on-b")
    drone = wait_until(lambda: Drone.objects.filter(name="watched-on-b", first_heartbeat_at__isnull=False).first(),
                       message="the first heartbeat (on replica B)")
    result["loop"].call_soon_threadsafe(result["future"].set_result, drone.pk)
    watcher.join(40)
    assert result.get("found"), f"no frame on replica A named drone {drone.pk}: {seen[-5:]}"


def test_claims_through_both_replicas_at_once_never_share_a_build(scaleout):
    job = make_job()
    builds = [build_trigger(job=job, trigger="api") for _ in range(60)]
    drones = [make_drone(f"claimer-{i}", capacity=10) for i in range(8)]
    claims: list[tuple[int, int, str]] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(drones))
    replicas = [scaleout.replica_a.url, scaleout.replica_b.url]

    def claimer(index: int, drone, client):
        with httpx.Client(headers={"Authorization": f"Bearer {client.token}"}, timeout=30) as http:
            start.wait()
            for turn in range(20):
                replica = replicas[(index + turn) % 2]
                response = http.post(f"{replica}/api/v1/builds/request", json={"free_slots": 1})
                if response.status_code == 204:
                    return
                if response.status_code != 201:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                with lock:
                    claims.append((response.json()["id"], drone.pk, replica))

    threads = [threading.Thread(target=claimer, args=(index, drone, client))
               for index, (drone, client) in enumerate(drones)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    counts = Counter(build_id for build_id, _, _ in claims)
    assert max(counts.values()) == 1, "a build was handed out twice"
    assert sorted(counts) == sorted(build.pk for build in builds), "every build was claimed once"
    assert {replica for _, _, replica in claims} == set(replicas), "both replicas handed out builds"
    for build_id, drone_id, _ in claims:
        assert Build.objects.get(pk=build_id).drone_id == drone_id
    assert BuildAttempt.objects.count() == len(builds)


def test_a_killed_worker_task_is_redelivered_and_completes_once(scaleout):
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    key = f"scaleout-probe-{time.monotonic_ns()}"
    from swarm.celery import app

    app.send_task("scaleout.probe", args=[key, 3.0], queue=scaleout.task_queue)
    first = wait_until(lambda: client.lrange(f"{key}:starts", 0, -1), timeout=30, message="the probe to start")
    (victim,) = [worker for worker in scaleout.workers if worker.env["SCALEOUT_WORKER_NAME"] == first[0]]
    victim.kill()  # SIGKILL mid-task: no warm shutdown, no chance to acknowledge or requeue
    try:
        wait_until(lambda: client.get(f"{key}:completions"), timeout=45,
                   message="the redelivered probe to complete on the other worker")
        starts = client.lrange(f"{key}:starts", 0, -1)
        assert len(starts) == 2 and starts[1] != first[0], starts
        time.sleep(5)  # a visibility timeout later: no third run, no second completion
        assert client.get(f"{key}:completions") == "1"
        assert len(client.lrange(f"{key}:starts", 0, -1)) == 2
    finally:
        victim.restart()


def sends(beat, task: str) -> int:
    return open(beat.log_path, errors="replace").read().count(f"Sending due task {task}")


def test_a_second_beat_stands_by_and_takes_over_when_the_first_dies(scaleout):
    task = "workflows.reap_executions"  # every second in this environment
    wait_until(lambda: sends(scaleout.beat, task) > 0, timeout=30, message="the first beat to send")
    second = scaleout.start_beat("beat-2")
    wait_until(lambda: "stands by" in open(second.log_path, errors="replace").read(), timeout=30,
               message="the second beat to stand by")
    before = sends(scaleout.beat, task)
    time.sleep(4)
    assert sends(scaleout.beat, task) - before >= 2, "the first beat kept sending"
    assert sends(second, task) == 0, "the second beat sent too: double work"
    scaleout.beat.kill()
    try:
        wait_until(lambda: sends(second, task) >= 2, timeout=20, message="the standby beat to take over")
    finally:
        second.stop()
        scaleout.beat.restart()


def test_killing_replica_a_moves_its_agents_to_b_without_losing_heartbeats_logs_or_builds(scaleout, agents,
                                                                                           tmp_path):
    names = [f"balanced-{i}" for i in range(4)]
    for name in names:
        agents(scaleout.proxy.url, name)
    drones = [wait_until(lambda n=name: connected_drone(n), message=f"{name} connected") for name in names]
    on_a = scaleout.proxy.open_websockets[scaleout.replica_a.port]
    assert on_a >= 1 and scaleout.proxy.open_websockets[scaleout.replica_b.port] >= 1, scaleout.proxy.open_websockets
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    lines = 40
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}",
                   steps=[f"for i in $(seq 1 {lines}); do echo line-$i; sleep 0.2; done"])
    build = build_trigger(job=job, trigger="api")
    wait_until(lambda: "line-5" in attempt_log(build.pk) if BuildAttempt.objects.filter(build_id=build.pk).exists()
               else False, timeout=30, message="the build's log to flow")

    killed_at = timezone.now()
    scaleout.replica_a.kill()
    try:
        headers = admin_headers()
        worst_gap, answered = 0.0, set()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and len(answered) < len(names):
            now = timezone.now()
            rows = list(Drone.objects.filter(pk__in=[drone.pk for drone in drones]))
            worst_gap = max(worst_gap, *[(now - row.last_heartbeat_at).total_seconds() for row in rows])
            # The user-visible proof: every agent answers a ping sent through the surviving replica.
            for name in set(names) - answered:
                response = httpx.post(f"{scaleout.replica_b.url}/api/v1/drones/{name}/ping", headers=headers,
                                      timeout=30)
                if response.status_code == 200 and response.json()["ok"] is True:
                    answered.add(name)
            time.sleep(0.2)
        assert answered == set(names), f"not answering through replica B: {set(names) - answered}"
        reconnected = Drone.objects.filter(pk__in=[drone.pk for drone in drones], ws_connected_at__gt=killed_at)
        assert reconnected.count() >= on_a, "the agents of replica A reconnected (to B: A is dead)"
        assert scaleout.proxy.open_connections[scaleout.replica_a.port] == 0, "connections left on the dead replica"
        # Heartbeats every second: one missed beat is allowed, a lost one would show as a longer gap.
        assert worst_gap < 4, f"a heartbeat was lost: {worst_gap:.1f} s without one"
        done = wait_until(lambda: Build.objects.filter(pk=build.pk, state__in=[
            BuildState.SUCCESS, BuildState.FAILED, BuildState.CANCELED]).first(), timeout=40,
            message="the build to finish")
        assert done.state == BuildState.SUCCESS, done.failure_reason
        assert BuildAttempt.objects.filter(build_id=build.pk).count() == 1, "the build was not lost and retried"
        log = attempt_log(build.pk)
        assert [line for line in log.splitlines() if line.startswith("line-")] == \
            [f"line-{i}" for i in range(1, lines + 1)], log[-2000:]
    finally:
        scaleout.replica_a.restart()
