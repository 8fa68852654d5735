"""Rollouts end to end with real processes: uvicorn, Celery workers and beat, `swarm-agent run` agents.

Fault tests run on a control plane of their own (RolloutPlane: its own server, a private rollout queue, its
own workers and beat) so that SIGKILLing its worker really leaves the rollout with none.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from drones.models import Drone
from drones.payloads.drift import drift_check
from drones.payloads.models import DronePayloadState, PayloadEvent, PayloadType, Rollout, RolloutTarget
from drones.tests.conftest import AgentProcess, wait_until
from drones.tests.payload_support import RolloutPlane, reproducible_bundle

pytestmark = pytest.mark.live

ROLLOUT_TIMEOUT = 90.0


def api(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def push(client: httpx.Client, files: dict, *, type_name: str = "toolchain", version: str = "1.0.0") -> dict:
    answer = client.post("/payload-versions", data={"type": type_name, "version": version},
                         files={"bundle": ("payload.tar.gz", reproducible_bundle(files), "application/gzip")})
    assert answer.status_code == 201, answer.text
    return answer.json()


def start_rollout(client: httpx.Client, **body) -> int:
    answer = client.post("/rollouts", json={"payload_type": "toolchain", "version": "1.0.0",
                                            "target": {"all": True}, **body})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def rollout_state(rollout_id: int) -> str:
    return Rollout.objects.get(pk=rollout_id).state


def current_of(agent: AgentProcess, type_name: str = "toolchain") -> str:
    try:
        return os.readlink(agent.state_dir / "payloads" / type_name / "current").rsplit("/", 1)[-1]
    except OSError:
        return ""


@pytest.fixture
def admin_token(transactional_db):
    from swarm.core.services import api_token_issue

    _, plaintext = api_token_issue(scope="admin", name="payload-live")
    return plaintext


def start_agents(url: str, tmp_path: Path, join_token: str, count: int, prefix: str) -> list[AgentProcess]:
    agents = [AgentProcess(url, tmp_path / f"{prefix}{number}", name=f"{prefix}{number}", join_token=join_token,
                           log_path=tmp_path / f"{prefix}{number}.log",
                           extra=["--disable-plugin", "builds"]) for number in range(count)]
    wait_until(lambda: Drone.objects.filter(name__startswith=prefix, ws_connected=True,
                                            last_heartbeat_at__isnull=False).count() == count,
               message="the agents to connect")
    return agents


def test_worker_and_beat_sigkilled_mid_rollout_resume_with_no_duplicate_deploys(
        subprocess_environment, tmp_path, join_token, admin_token):
    plane = RolloutPlane(subprocess_environment, tmp_path)
    agents = []
    try:
        plane.start_worker()
        plane.start_beat()
        agents = start_agents(plane.url, tmp_path, join_token, 3, "kill")
        client = api(plane.url, admin_token)
        version = push(client, {"bin/tool": "#!/bin/sh\necho one\n"})
        rollout_id = start_rollout(client, max_parallel=1, min_healthy_time=1.0)
        wait_until(lambda: RolloutTarget.objects.filter(rollout_id=rollout_id, state="succeeded").exists(),
                   timeout=ROLLOUT_TIMEOUT, message="the first drone to succeed")
        for process in [*plane.workers, plane.beat]:
            plane.sigkill(process)
        frozen = set(RolloutTarget.objects.filter(rollout_id=rollout_id).values_list("id", "state"))
        time.sleep(3)  # reports may still land (the server is up), but nothing moves the rollout on
        assert rollout_state(rollout_id) == "running"
        assert RolloutTarget.objects.filter(rollout_id=rollout_id, dispatched_at__isnull=False).count() <= 2
        assert frozen  # (what the agents did meanwhile is fine; what matters is that it resumes)
        plane.start_worker()
        plane.start_beat()
        wait_until(lambda: rollout_state(rollout_id) == "succeeded", timeout=ROLLOUT_TIMEOUT,
                   message="the rollout to finish after the restart")
        for agent in agents:
            assert current_of(agent) == version["sha256"], agent.log_text()[-2000:]
        for target in RolloutTarget.objects.filter(rollout_id=rollout_id):
            installs = PayloadEvent.objects.filter(target=target, to_state="installing").count()
            assert target.state == "succeeded" and installs == 1, (target, installs)
        # Every heartbeat reports the installed hash: no drift anywhere.
        wait_until(lambda: DronePayloadState.objects.filter(reported_sha256=version["sha256"]).count() == 3,
                   message="heartbeats reporting the hash")
        drift_check()
        assert not DronePayloadState.objects.filter(drifted=True).exists()
    finally:
        for agent in agents:
            agent.stop()
        plane.stop()


def test_agent_killed_mid_download_is_skipped_then_reconciled(
        live_url, celery_worker_process, tmp_path, join_token, admin_token):
    agents = start_agents(live_url, tmp_path, join_token, 2, "mid")
    client = api(live_url, admin_token)
    PayloadType.objects.create(name="toolchain", auto_reconcile=True)
    version = push(client, {"blob.bin": os.urandom(8 * 1024 * 1024)})
    rollout_id = start_rollout(client, max_parallel=2, min_healthy_time=0, healthy_deadline=60)
    victim = agents[0]
    wait_until(lambda: RolloutTarget.objects.filter(rollout_id=rollout_id, drone__name=victim.name,
                                                    dispatched_at__isnull=False).exists(), message="the dispatch")
    victim.kill()
    wait_until(lambda: rollout_state(rollout_id) in ("succeeded", "failed"), timeout=ROLLOUT_TIMEOUT,
               message="the rollout to finish without the killed drone")
    killed = RolloutTarget.objects.get(rollout_id=rollout_id, drone__name=victim.name)
    assert killed.state in ("skipped", "failed", "succeeded"), killed.state
    if killed.state == "succeeded":
        pytest.skip("the agent finished before the kill landed")
    # Nothing half-installed: the live release is untouched (a SIGKILL mid-unpack can leave the hidden
    # staging directory behind; it never becomes current, and the restarted agent sweeps it).
    assert current_of(victim) in ("", version["sha256"])
    victim.start()
    wait_until(lambda: Drone.objects.filter(name=victim.name, ws_connected=True).exists(), message="reconnect")
    # Beat's fleet-wide drift check (run here as beat would): desired is the new version, the drone reports
    # none → a reconcile rollout puts it there.
    wait_until(lambda: (drift_check(), current_of(victim) == version["sha256"])[1], timeout=ROLLOUT_TIMEOUT,
               interval=1.0, message="the reconcile to install it")
    assert Rollout.objects.filter(is_reconcile=True, target_names=[victim.name]).exists()
    assert not list((victim.state_dir / "payloads" / "toolchain" / "releases").glob(".*partial"))
    victim.stop()
    agents[1].stop()


def agent_release(destination: Path, *, version: str, break_with: str = "") -> Path:
    """A copy of this checkout's `swarm_agent` package, as a swarm-agent payload directory."""
    import shutil

    import swarm_agent

    package = destination / "swarm_agent"
    shutil.copytree(Path(swarm_agent.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    init = package / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', f'__version__ = "{version}+'))
    if break_with == "import":
        init.write_text(init.read_text() + "\nraise ImportError('this agent release is broken on purpose')\n")
    elif break_with == "start":
        run = package / "commands" / "run.py"
        run.write_text(run.read_text().replace('    """Run the daemon until it is stopped."""',
                                               '    """Run the daemon until it is stopped."""\n'
                                               '    raise SystemExit("crashing on start on purpose")'))
    return destination


def files_of(directory: Path) -> dict:
    return {path.relative_to(directory).as_posix(): path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def test_agent_upgrades_itself_and_a_broken_release_reverts_on_its_own(
        live_url, celery_worker_process, tmp_path, join_token, admin_token):
    agent, = start_agents(live_url, tmp_path, join_token, 1, "self")
    client = api(live_url, admin_token)
    good = push(client, files_of(agent_release(tmp_path / "good", version="good")), type_name="swarm-agent",
                version="0.2.0")
    rollout_id = start_rollout(client, payload_type="swarm-agent", version="0.2.0", min_healthy_time=0)
    wait_until(lambda: rollout_state(rollout_id) in ("succeeded", "failed"), timeout=ROLLOUT_TIMEOUT,
               message="the agent upgrade")
    target = RolloutTarget.objects.get(rollout_id=rollout_id)
    assert rollout_state(rollout_id) == "succeeded", (target.reason, agent.log_text()[-3000:])
    assert current_of(agent, "swarm-agent") == good["sha256"]
    assert agent.process.poll() is None  # the launcher replaced the process in place (same pid)
    wait_until(lambda: DronePayloadState.objects.filter(payload_type__name="swarm-agent",
                                                        reported_sha256=good["sha256"]).exists(),
               message="the new agent's heartbeat")

    for number, breakage in enumerate(("start", "import"), start=3):
        broken = push(client, files_of(agent_release(tmp_path / f"broken-{breakage}", version=breakage,
                                                     break_with=breakage)),
                      type_name="swarm-agent", version=f"0.{number}.0")
        rollout_id = start_rollout(client, payload_type="swarm-agent", version=f"0.{number}.0", min_healthy_time=0)
        wait_until(lambda: rollout_state(rollout_id) in ("succeeded", "failed"), timeout=ROLLOUT_TIMEOUT,
                   message=f"the broken ({breakage}) upgrade to end")
        target = RolloutTarget.objects.get(rollout_id=rollout_id)
        assert target.state == "failed", (target.state, agent.log_text()[-3000:])
        expected = "exited with code" if breakage == "start" else "failed its probe"
        assert expected in target.reason, target.reason
        assert current_of(agent, "swarm-agent") == good["sha256"]
        assert broken["sha256"] != good["sha256"]
        before = Drone.objects.get(name=agent.name).last_heartbeat_at
        wait_until(lambda: Drone.objects.get(name=agent.name).last_heartbeat_at > before,
                   message="the agent still heartbeating")
    assert agent.process.poll() is None
    agent.process.send_signal(signal.SIGTERM)
    assert agent.process.wait(30) == 0


def swarmctl(url: str, token: str, *args: str) -> "subprocess.CompletedProcess":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "swarm_agent.cli_ctl", *args], capture_output=True, text=True,
                          env=dict(os.environ, SWARM_URL=url, SWARM_TOKEN=token), timeout=120)


def test_swarmctl_push_release_rollout_follow_exit_codes(live_url, celery_worker_process, tmp_path, join_token,
                                                         admin_token):
    agent, = start_agents(live_url, tmp_path, join_token, 1, "cli")
    source = tmp_path / "conf"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "make.conf").write_text('CFLAGS="-O2 -pipe"\n')
    pushed = swarmctl(live_url, admin_token, "payload", "push", str(source), "--type", "portage-config",
                      "--version", "1.0.0", "--json")
    assert pushed.returncode == 0, pushed.stderr
    sha256 = json.loads(pushed.stdout)["sha256"]
    again = swarmctl(live_url, admin_token, "payload", "push", str(source), "--type", "portage-config",
                     "--version", "1.0.0")
    assert again.returncode == 0 and again.stdout.startswith("deduplicated")  # packed reproducibly
    release = swarmctl(live_url, admin_token, "release", "create", "--payload", "portage-config=1.0.0", "--json")
    assert release.returncode == 0, release.stderr
    name = json.loads(release.stdout)["name"]
    manifest = swarmctl(live_url, admin_token, "release", "show", name, "--manifest")
    assert hashlib.sha256(manifest.stdout.rstrip("\n").encode()).hexdigest() == json.loads(release.stdout)[
        "manifest_sha256"]
    started = swarmctl(live_url, admin_token, "rollout", "start", "--release", name, "--all",
                       "--min-healthy-time", "0", "--follow")
    assert started.returncode == 0, (started.stdout, started.stderr, agent.log_text()[-2000:])
    assert "succeeded" in started.stdout
    assert (agent.state_dir / "payloads/portage-config/current/etc/make.conf").read_text() == 'CFLAGS="-O2 -pipe"\n'
    assert current_of(agent, "portage-config") == sha256
    rollout_id = Rollout.objects.get().pk
    refused = swarmctl(live_url, admin_token, "rollout", "promote", str(rollout_id))
    assert refused.returncode == 1 and "cannot_promote" in refused.stderr
    reverted = swarmctl(live_url, admin_token, "rollout", "revert", str(rollout_id), "--follow")
    assert reverted.returncode == 3, (reverted.stdout, reverted.stderr)
    assert current_of(agent, "portage-config") == ""  # it had nothing before
    agent.stop()


def test_with_the_websocket_down_the_agent_gets_its_deploy_by_polling(live_url, celery_worker_process, tmp_path,
                                                                      join_token, admin_token):
    agent = AgentProcess(live_url, tmp_path / "poller", name="poller", join_token=join_token,
                         log_path=tmp_path / "poller.log", extra=["--disable-plugin", "builds", "--no-websocket"],
                         env={"SWARM_AGENT_PAYLOAD_POLL_INTERVAL": "1"})
    try:
        wait_until(lambda: Drone.objects.filter(name="poller", last_heartbeat_at__isnull=False).exists(),
                   message="the first heartbeat")
        client = api(live_url, admin_token)
        version = push(client, {"etc/motd": "polled\n"})
        rollout_id = start_rollout(client, min_healthy_time=0)
        wait_until(lambda: rollout_state(rollout_id) == "succeeded", timeout=ROLLOUT_TIMEOUT,
                   message="the rollout through the HTTP poll")
        assert current_of(agent) == version["sha256"]
        assert not Drone.objects.get(name="poller").ws_connected
    finally:
        agent.stop()
