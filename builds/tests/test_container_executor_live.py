"""Real agents running a job's steps in its `image` through a real podman, against a real uvicorn server.

The image is made from Debian packages in test setup (builds/tests/container_image.py: the microVM image's
mmdebstrap base layer, cached under var/microvm/base/, then `podman import`). Covers: steps run in the image and see the workspace (the image's
/etc/os-release, an artifact written in the container); secrets masked in the log and never in any
process's command line; cancel kills the container; a drone that runs no containers never claims a job
with an image, and the build says why.
"""
import hashlib
import subprocess
import time

import httpx
import psutil
import pytest

from builds.choices import BuildState
from builds.models import Artifact, Build
from builds.selectors import build_waiting_reason
from builds.services import build_trigger
from builds.tests.container_image import build_test_image, containers_conf, podman
from builds.tests.factories import make_git_repo, make_job
from builds.tests.test_agent_live import attempt_log, build_in, wait_for_drone
from drones.models import Drone
from drones.tests.conftest import wait_until

pytestmark = [pytest.mark.live, pytest.mark.skipif(podman() is None, reason="podman is not installed "
                                                                           "(scripts/system-deps.sh installs it)")]


@pytest.fixture(scope="module")
def container_image(django_db_blocker):
    with django_db_blocker.unblock():
        image = build_test_image()
    for name in swarm_containers():  # an interrupted earlier run's: the assertions count containers
        subprocess.run([podman(), "rm", "-f", name], capture_output=True)
    return image


@pytest.fixture
def container_env():
    return {"CONTAINERS_CONF": str(containers_conf())}


def swarm_containers() -> list[str]:
    listed = subprocess.run([podman(), "ps", "-a", "--filter", "label=swarm.build", "--format", "{{.Names}}"],
                            capture_output=True, text=True)
    return [name for name in listed.stdout.split() if name]


def command_lines() -> list[str]:
    lines = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            lines.append(" ".join(process.info.get("cmdline") or []))
        except psutil.Error:
            pass
    return lines


def test_steps_run_in_the_image_with_masked_secrets_and_an_artifact(builds_live_url, build_agent, tmp_path,
                                                                     admin_api, container_image, container_env):
    make_git_repo(tmp_path / "repo", {"build.sh": "#!/bin/sh\necho \"building $GREETING in $(pwd)\"\n"})
    secret = "hunter22-container-secret"
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", image=container_image, env={"GREETING": "world"},
                   secrets={"API_TOKEN": secret, "PEM": "-----BEGIN-----\nline-two\n-----END-----"},
                   steps=["./build.sh", "grep PRETTY_NAME /etc/os-release",
                          "echo token=$API_TOKEN; printf '%s' \"$PEM\" | wc -l",
                          # Long enough to look at every process's command line while it runs.
                          "for i in 1 2 3 4 5 6; do [ -e /workspace/.seen ] && break; sleep 1; done",
                          "mkdir -p out && printf 'from-the-image' > out/result.bin && test ! -e /usr/bin/podman"],
                   artifacts=["out/*.bin"])
    agent = build_agent("ctr-1", env=container_env)
    drone = wait_for_drone("ctr-1")
    assert "container:oci" in drone.labels and "container:podman" in drone.labels, drone.labels
    response = httpx.post(f"{builds_live_url}/api/v1/jobs/{job.pk}/trigger", json={"branch": "main"},
                          headers={"Authorization": f"Bearer {admin_api.token}"})
    assert response.status_code == 201, response.text
    build_id = response.json()["id"]
    wait_until(lambda: any("for i in 1 2 3" in line for line in command_lines()), timeout=60,
               message="the waiting step to run")
    assert not [line for line in command_lines() if secret in line or "line-two" in line]
    running = Build.objects.get(pk=build_id)
    workspace = next(p for p in (tmp_path / "agent-ctr-1").rglob("workspace/src") if p.is_dir())
    (workspace / ".seen").write_text("")
    build = wait_until(lambda: build_in(build_id, BuildState.SUCCESS, BuildState.FAILED), timeout=60,
                       message="the build to finish")
    log = attempt_log(build_id, 1)
    assert build.state == BuildState.SUCCESS, (log, agent.log_text()[-3000:])
    assert running.drone_id == drone.pk
    assert "container executor, podman" in log
    assert "building world in /workspace" in log
    assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in log
    assert "token=[MASKED]" in log and secret not in log and "\n2\n" in log
    artifact = Artifact.objects.get(build_id=build_id)
    assert artifact.sha256 == hashlib.sha256(b"from-the-image").hexdigest()
    assert not swarm_containers()


def test_cancel_kills_the_container(builds_live_url, build_agent, tmp_path, admin_api, container_image,
                                    container_env):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    # The step ignores SIGTERM: only the engine's kill after the grace period (2 s) ends it.
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", image=container_image,
                   steps=["trap '' TERM; echo begin; sleep 4261 & sleep 4261; wait"])
    agent = build_agent("ctr-cancel", env=container_env)
    wait_for_drone("ctr-cancel")
    build = build_trigger(job=job, trigger="api")
    wait_until(lambda: swarm_containers() and "begin" in attempt_log(build.pk, 1), timeout=60,
               message="the container to run")
    started = time.monotonic()
    response = httpx.post(f"{builds_live_url}/api/v1/builds/{build.pk}/cancel",
                          headers={"Authorization": f"Bearer {admin_api.token}"})
    assert response.status_code == 202
    wait_until(lambda: not swarm_containers() and not [p for p in command_lines() if "sleep 4261" in p
                                                       and "podman" not in p and "pytest" not in p],
               timeout=15, interval=0.2, message="the container and its processes to be gone")
    assert time.monotonic() - started < 15
    done = wait_until(lambda: build_in(build.pk, BuildState.CANCELED, BuildState.FAILED, BuildState.SUCCESS),
                      timeout=20, message="the build to be canceled")
    assert done.state == BuildState.CANCELED, agent.log_text()[-3000:]


def test_a_drone_without_containers_does_not_claim_an_image_job(builds_live_url, build_agent, tmp_path,
                                                                  container_image):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", image=container_image, steps=["true"])
    build_agent("no-ctr", env={"SWARM_AGENT_CONTAINER_ENGINE": "none"})
    drone = wait_for_drone("no-ctr")
    assert not [label for label in drone.labels if label.startswith("container:")]
    assert drone.container_engine == "" and "SWARM_AGENT_CONTAINER_ENGINE=none" in drone.container_detail
    build = build_trigger(job=job, trigger="api")
    time.sleep(5)  # several of the agent's polls (every 2 s)
    build.refresh_from_db()
    assert build.state == BuildState.PENDING and build.drone_id is None
    reason = build_waiting_reason(build)
    assert "no drone offers container:oci" in reason and "SWARM_AGENT_CONTAINER_ENGINE=none" in reason, reason


def test_the_timeout_kills_the_container(builds_live_url, build_agent, tmp_path, container_image, container_env):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", image=container_image, timeout=3,
                   steps=["trap '' TERM; echo begin; sleep 4262"])
    agent = build_agent("ctr-timeout", env=container_env)
    wait_for_drone("ctr-timeout")
    build = build_trigger(job=job, trigger="api")
    done = wait_until(lambda: build_in(build.pk, BuildState.CANCELED, BuildState.FAILED, BuildState.SUCCESS),
                      timeout=60, message="the build to time out")
    assert (done.state, done.failure_reason) == (BuildState.FAILED, "job_execution_timeout"), \
        agent.log_text()[-3000:]
    assert not swarm_containers()
    assert not [line for line in command_lines() if "sleep 4262" in line and "pytest" not in line]


def test_a_broken_engine_is_reported_as_it_is_and_a_reprobe_finds_it_fixed(builds_live_url, build_agent, tmp_path,
                                                                           container_env):
    # A containers.conf naming a runtime that does not exist: podman fails to run anything, as on a host where
    # crun refuses hybrid cgroups; the agent must say so, not claim image jobs, and notice the fix.
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\nruntime = "no-such-runtime"\n')
    build_agent("ctr-broken", env={"CONTAINERS_CONF": str(conf), "SWARM_AGENT_SANDBOX_PROBE_INTERVAL": "1"})
    drone = wait_for_drone("ctr-broken")
    assert drone.container_engine == "" and "podman" in drone.container_detail, drone.container_detail
    assert not [label for label in drone.labels if label.startswith("container:")]
    conf.write_text(open(container_env["CONTAINERS_CONF"]).read())
    fixed = wait_until(lambda: Drone.objects.filter(name="ctr-broken", container_engine="podman").first(),
                       timeout=30, message="the re-probe to find podman working")
    assert "container:oci" in fixed.labels and "runs containers" in fixed.container_detail
