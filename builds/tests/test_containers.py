"""Containers, honestly: the agent's probe runs an image for real, drones carry `container:*` labels from its
report, a job with an `image` requires `container:oci`, and without such a drone the build waits saying why."""
import asyncio
import os
import stat
import subprocess
import sys

import pytest

from builds.selectors import build_waiting_reason
from builds.services import build_claim, build_trigger
from builds.tests.factories import BUBBLEWRAP, make_drone, make_job

PODMAN = {**BUBBLEWRAP, "containers": {"engine": "podman", "detail": "/usr/bin/podman runs containers"}}
BROKEN = {**BUBBLEWRAP, "containers": {"engine": "", "detail": "podman: run of a probe image exits 126: crun: "
                                                              "cgroups in hybrid mode not supported"}}


@pytest.mark.django_db
def test_an_image_job_goes_only_to_a_drone_that_runs_containers_and_otherwise_says_why():
    plain, _ = make_drone("plain", sandbox=BROKEN)
    assert plain.labels == ["sandbox:bubblewrap", "sandbox:none"] and plain.container_engine == ""
    build = build_trigger(job=make_job(image="localhost/app:1", labels=["linux"]), trigger="api")
    assert build.required_labels == ["container:oci", "linux"]
    assert build_claim(drone=plain) is None
    reason = build_waiting_reason(build)
    assert "no drone offers container:oci" in reason and "cgroups in hybrid mode" in reason, reason
    host_build = build_trigger(job=make_job(), trigger="api")
    assert build_claim(drone=plain).build.pk == host_build.pk  # the same drone still takes a host job
    runner, _ = make_drone("runner", labels=["linux"], sandbox=PODMAN)
    assert runner.labels == ["container:oci", "container:podman", "linux", "sandbox:bubblewrap", "sandbox:none"]
    assert build_claim(drone=runner).build.pk == build.pk


@pytest.mark.django_db
def test_container_labels_are_the_control_planes_and_reports_are_checked(anonymous_api, admin_api):
    from drones.services import join_token_issue

    _, join = join_token_issue(name="join-ctr")
    body = {"join_token": join, "name": "liar", "labels": ["container:podman"]}
    response = anonymous_api.post("/api/v1/drones/register", body, format="json")
    assert response.status_code == 400 and response.json()["field"] == "labels"
    body = {"join_token": join, "name": "odd", "sandbox": {**BUBBLEWRAP, "containers": {"engine": "lxc"}}}
    response = anonymous_api.post("/api/v1/drones/register", body, format="json")
    assert response.status_code == 400 and response.json()["field"] == "sandbox.containers.engine"
    response = admin_api.post("/api/v1/jobs", {"name": "j", "scm_url": "https://git.example.com/a.git",
                                               "build_config": {"steps": ["x"], "labels": ["container:oci"]}},
                              format="json")
    assert response.status_code == 400 and response.json()["field"] == "build_config.labels"


@pytest.mark.django_db
def test_a_heartbeat_that_loses_the_engine_drops_the_container_labels():
    drone, client = make_drone("flaky", sandbox=PODMAN)
    assert "container:oci" in drone.labels
    response = client.post("/api/v1/drones/heartbeat", {"metrics": {}, "sandbox": BROKEN}, format="json")
    assert response.status_code == 200 and response.json()["sandbox_recorded"] is True
    drone.refresh_from_db()
    assert drone.container_engine == "" and "hybrid mode" in drone.container_detail
    assert not [label for label in drone.labels if label.startswith("container:")]


# --- the agent's side ---------------------------------------------------------------------


def test_the_probe_reports_honestly_what_it_found(tmp_path, monkeypatch):
    from swarm_agent.builds.executors import container_probe, sandbox_probe

    assert container_probe("none").engine == "" and "=none" in container_probe("none").detail
    assert container_probe("lxc").engine == ""
    broken = tmp_path / "podman"
    broken.write_text("#!/bin/sh\n[ \"$1\" = run ] && { echo 'Error: crun: cgroups in hybrid mode' >&2; exit 126; }\n"
                      "exit 0\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    report = container_probe("podman")
    assert report.engine == "" and "exits 126" in report.detail and "hybrid mode" in report.detail
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    report = container_probe("auto")
    assert report.engine == "" and "podman is not installed" in report.detail
    assert sandbox_probe("none").as_dict()["containers"] == report.as_dict()


def test_the_executor_never_puts_a_value_on_the_command_line(tmp_path):
    from swarm_agent.builds.executors import ContainerExecutor, ContainerReport, ContainerUnavailable

    executor = ContainerExecutor(report=ContainerReport("podman", "works", path="/usr/bin/podman"))
    private = tmp_path / "private"
    private.mkdir()
    argv, engine_env = executor._run_argv("make", container="swarm-build-0123456789abcdef", image="img",
                                          workspace=tmp_path, env={"TOKEN": "s3cret", "KEY": "a\nb"},
                                          private=private)
    assert not [arg for arg in argv if "s3cret" in arg or "a\nb" in arg]
    env_file = private / "env"
    assert env_file.read_text() == "TOKEN=s3cret\n" and stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert argv[argv.index("-e") + 1] == "KEY" and engine_env["KEY"] == "a\nb"
    assert argv[:5] == ["/usr/bin/podman", "run", "--rm", "--name", "swarm-build-0123456789abcdef"]
    unavailable = ContainerExecutor(report=ContainerReport("", "podman is not installed"))
    with pytest.raises(ContainerUnavailable, match="not installed"):
        asyncio.run(unavailable.run_step("true", workspace=tmp_path, env={}, output=lambda data: None, image="x"))


def test_the_agent_never_imports_django_for_containers():
    code = "import sys, swarm_agent.builds.executors.container; print('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
