"""An honest sandbox: drones report the isolation they offer, jobs state what they need, and the claim matches the two
through implicit `sandbox:*` labels; the process executor never falls back to running unsandboxed on its own."""
import asyncio
import os
import shutil
import stat

import pytest

from builds.models import Build
from builds.selectors import build_waiting_reason
from builds.services import build_claim, build_trigger
from builds.tests.factories import make_drone, make_job
from drones.models import Drone

UNAVAILABLE = {"mode": "unavailable", "detail": "bubblewrap (bwrap) is not installed"}
OPTED_OUT = {"mode": "none", "detail": "SWARM_AGENT_BUILD_SANDBOX=none"}


@pytest.mark.django_db
def test_a_drone_without_a_sandbox_gets_no_job_that_needs_one_and_the_build_says_why():
    bare, _ = make_drone("bare", sandbox=UNAVAILABLE)
    assert bare.labels == [] and bare.sandbox == "unavailable"
    build = build_trigger(job=make_job(), trigger="api")
    assert build.required_labels == ["sandbox:bubblewrap"]
    assert build_claim(drone=bare) is None
    reason = build_waiting_reason(Build.objects.get(pk=build.pk))
    assert reason.startswith("no drone offers sandbox:bubblewrap") and "1 unavailable" in reason
    sandboxed, _ = make_drone("sandboxed")
    assert build_waiting_reason(Build.objects.get(pk=build.pk)) is None
    assert build_claim(drone=sandboxed).build.pk == build.pk


@pytest.mark.django_db
def test_an_opted_out_drone_takes_only_jobs_that_need_no_sandbox():
    opted, _ = make_drone("opted", sandbox=OPTED_OUT)
    assert opted.labels == ["sandbox:none"]
    needs = build_trigger(job=make_job(name="needs"), trigger="api")
    relaxed = build_trigger(job=make_job(name="relaxed", sandbox="none"), trigger="api")
    assert build_claim(drone=opted).build.pk == relaxed.pk
    assert build_claim(drone=opted) is None
    assert Build.objects.get(pk=needs.pk).state == "pending"


@pytest.mark.django_db
def test_a_drone_that_never_reported_takes_nothing():
    silent, _ = make_drone("silent", sandbox=None)
    assert silent.sandbox == "" and silent.labels == []
    build_trigger(job=make_job(sandbox="none"), trigger="api")
    assert build_claim(drone=silent) is None


def test_the_registration_refuses_reserved_labels_and_bad_reports(anonymous_api, db):
    from drones.services import join_token_issue

    _, join = join_token_issue(name="join-x")
    body = {"join_token": join, "name": "liar", "labels": ["linux", "sandbox:bubblewrap"]}
    response = anonymous_api.post("/api/v1/drones/register", body, format="json")
    assert response.status_code == 400 and response.json()["field"] == "labels"
    body = {"join_token": join, "name": "odd", "sandbox": {"mode": "chroot"}}
    response = anonymous_api.post("/api/v1/drones/register", body, format="json")
    assert response.status_code == 400 and response.json()["field"] == "sandbox.mode"
    assert not Drone.objects.exists()
    body = {"join_token": join, "name": "good", "labels": ["linux"], "sandbox": OPTED_OUT}
    assert anonymous_api.post("/api/v1/drones/register", body, format="json").status_code == 201
    drone = Drone.objects.get(name="good")
    assert (drone.labels, drone.sandbox) == (["linux", "sandbox:none"], "none")


def test_a_job_cannot_name_sandbox_labels_or_an_unknown_sandbox(admin_api, db):
    for config, field in (({"steps": ["x"], "labels": ["sandbox:none"]}, "build_config.labels"),
                          ({"steps": ["x"], "sandbox": "chroot"}, "build_config.sandbox")):
        response = admin_api.post("/api/v1/jobs", {"name": "j", "scm_url": "https://git.example.com/a/b",
                                                   "build_config": config}, format="json")
        assert response.status_code == 400 and response.json()["field"] == field


def test_a_heartbeat_reports_a_changed_sandbox_and_the_labels_follow(db):
    drone, client = make_drone("changing", labels=["linux"])
    assert drone.labels == ["linux", "sandbox:bubblewrap", "sandbox:none"]
    response = client.post("/api/v1/drones/heartbeat", {"metrics": {}, "sandbox": UNAVAILABLE}, format="json")
    assert response.status_code == 200 and response.json()["sandbox_recorded"] is True
    drone.refresh_from_db()
    assert (drone.sandbox, drone.labels) == ("unavailable", ["linux"])
    assert "sandbox_recorded" not in client.post("/api/v1/drones/heartbeat", {"metrics": {}}, format="json").json()
    drone.refresh_from_db()
    seen = drone.last_heartbeat_at
    bad = client.post("/api/v1/drones/heartbeat", {"metrics": {"load": 9}, "sandbox": "yes"}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "sandbox"
    mode = client.post("/api/v1/drones/heartbeat", {"metrics": {}, "sandbox": {"mode": "chroot"}}, format="json")
    assert mode.status_code == 400 and mode.json()["field"] == "sandbox.mode"
    drone.refresh_from_db()  # refused before anything was written: the heartbeat is not recorded
    assert drone.last_heartbeat_at == seen and drone.metrics != {"load": 9}


def test_the_api_and_admin_show_the_reason_a_build_waits(admin_api, admin_client, db):
    make_drone("bare", sandbox=UNAVAILABLE)
    build = build_trigger(job=make_job(), trigger="api")
    answer = admin_api.get(f"/api/v1/builds/{build.pk}").json()
    assert answer["waiting_reason"].startswith("no drone offers sandbox:bubblewrap")
    page = admin_client.get(f"/admin/builds/build/{build.pk}/change/").content.decode()
    assert "no drone offers sandbox:bubblewrap" in page
    drones_page = admin_client.get("/admin/drones/drone/").content.decode()
    assert "unavailable: takes no builds" in drones_page


# --- the agent's side ---------------------------------------------------------------------


def test_the_probe_runs_bwrap_and_reports_what_it_found(tmp_path, monkeypatch):
    from swarm_agent.builds.executors import sandbox_probe

    if shutil.which("bwrap"):
        report = sandbox_probe("auto")
        assert report.mode in ("bubblewrap", "unavailable") and report.detail
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    report = sandbox_probe("bubblewrap")
    assert report.mode == "unavailable" and "No permissions" in report.detail
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "not installed" in sandbox_probe("auto").detail
    assert sandbox_probe("none").mode == "none"
    assert sandbox_probe("sometimes").mode == "unavailable"


def test_the_process_executor_refuses_to_run_unsandboxed_unless_opted_out(tmp_path):
    from swarm_agent.builds.executors import ProcessExecutor, SandboxReport, SandboxUnavailable

    output: list[bytes] = []
    executor = ProcessExecutor(sandbox=SandboxReport("unavailable", "bwrap is not installed"))
    assert "no sandbox available" in executor.describe()
    with pytest.raises(SandboxUnavailable, match="bwrap is not installed"):
        asyncio.run(executor.run_step("echo hi", workspace=tmp_path, env={"PATH": os.environ["PATH"]},
                                      output=output.append))
    assert output == []
    opted = ProcessExecutor(sandbox=SandboxReport("none", "SWARM_AGENT_BUILD_SANDBOX=none"))
    assert "NO sandbox (this drone opted out" in opted.describe()
    result = asyncio.run(opted.run_step("echo hi", workspace=tmp_path, env={"PATH": os.environ["PATH"]},
                                        output=output.append))
    assert result.exit_code == 0 and b"hi" in b"".join(output)
