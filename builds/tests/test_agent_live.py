"""Real agents (`swarm-agent run`) building real git repositories against a real uvicorn server.

Covers the faults the issue names: an agent killed mid-build (lease expiry →
runner_system_failure → attempt 2 on another drone, attempt 1's log kept), a
cancel mid-step (the process group is gone within the grace period), a step
that never prints cancelled through the agent's own polling, and overtime.
"""
import hashlib
import time

import httpx
import psutil
import pytest

from builds.choices import BuildState, FailureReason
from builds.models import Artifact, Build, BuildAttempt
from builds.services import attempt_log_iter, build_trigger, builds_reap
from builds.tests.factories import make_git_repo, make_job
from drones.models import Drone
from drones.tests.conftest import wait_until

pytestmark = pytest.mark.live


def attempt_log(build_id: int, number: int) -> str:
    attempt = BuildAttempt.objects.get(build_id=build_id, number=number)
    return b"".join(attempt_log_iter(attempt=attempt)).decode(errors="replace")


def build_in(build_id: int, *states):
    build = Build.objects.get(pk=build_id)
    return build if build.state in states else None


def processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        if marker in cmdline and "pytest" not in cmdline and process.info.get("status") != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def wait_for_drone(name: str):
    return wait_until(lambda: Drone.objects.filter(name=name, ws_connected=True).first(),
                      message=f"drone {name} connected")


def test_build_runs_end_to_end_with_masked_secret_and_artifact(builds_live_url, build_agent, tmp_path, admin_api):
    sha = make_git_repo(tmp_path / "repo", {"build.sh": "#!/bin/sh\necho \"building $GREETING\"\n"})
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", env={"GREETING": "world"}, secrets={"API_TOKEN": "hunter22-secret"},
                   steps=["./build.sh", "echo token=$API_TOKEN", "mkdir -p out && printf 'artifact-bytes' > out/result.bin"],
                   artifacts=["out/*.bin"])
    agent = build_agent("e2e-1")
    wait_for_drone("e2e-1")
    response = httpx.post(f"{builds_live_url}/api/v1/jobs/{job.pk}/trigger", json={"branch": "main"},
                          headers={"Authorization": f"Bearer {admin_api.token}"})
    assert response.status_code == 201, response.text
    build_id = response.json()["id"]
    build = wait_until(lambda: build_in(build_id, BuildState.SUCCESS, BuildState.FAILED), timeout=60,
                       message="the build to finish")
    log = attempt_log(build_id, 1)
    assert build.state == BuildState.SUCCESS, (log, agent.log_text()[-3000:])
    assert build.commit_sha == sha
    assert "building world" in log and "token=[MASKED]" in log and "hunter22-secret" not in log
    attempt = BuildAttempt.objects.get(build_id=build_id, number=1)
    assert attempt.log_checksum == attempt.log_checksum_reported == \
        "sha256:" + hashlib.sha256(log.encode()).hexdigest()
    artifact = Artifact.objects.get(build_id=build_id)
    assert artifact.path == "out/result.bin" and artifact.sha256 == hashlib.sha256(b"artifact-bytes").hexdigest()
    download = httpx.get(f"{builds_live_url}/api/v1/builds/{build_id}/artifacts/{artifact.pk}/download",
                         headers={"Authorization": f"Bearer {admin_api.token}"}, follow_redirects=True)
    assert download.status_code == 200 and download.content == b"artifact-bytes"


def test_default_branch_is_the_repositorys_and_a_missing_ref_is_a_source_failure(builds_live_url, build_agent,
                                                                                 tmp_path, admin_api):
    # `git init` on another machine gives `master`: a job that names no branch builds whatever HEAD is.
    make_git_repo(tmp_path / "repo", {"build.sh": "#!/bin/sh\necho built on $SWARM_BRANCH\n"}, branch="master")
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", steps=["./build.sh"],
                   retry={"max": 0, "when": ["source_failure"]})
    build_agent("branch-1")
    wait_for_drone("branch-1")
    headers = {"Authorization": f"Bearer {admin_api.token}"}
    ok = httpx.post(f"{builds_live_url}/api/v1/jobs/{job.pk}/trigger", json={}, headers=headers).json()
    build = wait_until(lambda: build_in(ok["id"], BuildState.SUCCESS, BuildState.FAILED), timeout=60,
                       message="the default-branch build to finish")
    log = attempt_log(ok["id"], 1)
    assert build.state == BuildState.SUCCESS, log
    assert build.branch == "master" and "(master, the repository default)" in log

    missing = httpx.post(f"{builds_live_url}/api/v1/jobs/{job.pk}/trigger", json={"branch": "main"},
                         headers=headers).json()
    build = wait_until(lambda: build_in(missing["id"], BuildState.SUCCESS, BuildState.FAILED), timeout=60,
                       message="the missing-branch build to finish")
    assert build.failure_reason == FailureReason.SOURCE_FAILURE
    last_line = attempt_log(missing["id"], 1).rstrip("\n").splitlines()[-1]
    assert last_line.startswith(f"Build finished: failed (source_failure: could not clone branch main of "
                                f"file://{tmp_path / 'repo'}: "), last_line
    assert "not found" in last_line.lower() and "$ ./build.sh" not in attempt_log(missing["id"], 1)


def test_killed_agent_is_retried_on_another_drone_and_keeps_attempt_one_log(builds_live_url, build_agent,
                                                                              tmp_path):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", retry={"max": 1, "when": ["runner_system_failure"]},
                   steps=['echo "attempt $SWARM_BUILD_ATTEMPT started"',
                          'if [ "$SWARM_BUILD_ATTEMPT" = 1 ]; then sleep 4250; fi; echo finished'])
    first = build_agent("kill-a")
    wait_for_drone("kill-a")
    build = build_trigger(job=job, trigger="api")
    wait_until(lambda: "attempt 1 started" in attempt_log(build.pk, 1) if BuildAttempt.objects.filter(
        build=build).exists() else False, timeout=30, message="attempt 1 to print")
    first.kill()
    second = build_agent("kill-b")
    wait_for_drone("kill-b")

    def reaped():
        builds_reap()
        return BuildAttempt.objects.filter(build=build, number=1, failure_reason="runner_system_failure").exists()

    wait_until(reaped, timeout=30, interval=0.5, message="the lease to expire and the reaper to fail attempt 1")
    done = wait_until(lambda: build_in(build.pk, BuildState.SUCCESS, BuildState.FAILED), timeout=60,
                      message="attempt 2 to finish")
    assert done.state == BuildState.SUCCESS, second.log_text()[-3000:]
    attempts = list(BuildAttempt.objects.filter(build=build).order_by("number"))
    assert [a.number for a in attempts] == [1, 2]
    assert attempts[0].drone.name == "kill-a" and attempts[1].drone.name == "kill-b"
    assert attempts[0].failure_reason == FailureReason.RUNNER_SYSTEM_FAILURE
    assert "attempt 1 started" in attempt_log(build.pk, 1), "attempt 1's log is kept"
    assert "attempt 2 started" in attempt_log(build.pk, 2) and "finished" in attempt_log(build.pk, 2)
    for process in processes_with("sleep 4250"):
        process.kill()


def test_cancel_mid_step_kills_the_process_group_within_the_grace_period(builds_live_url, build_agent, tmp_path,
                                                                         admin_api):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    # The step ignores SIGTERM (and so do its children): only the SIGKILL after the grace period ends it.
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}",
                   steps=["trap '' TERM; echo begin; sleep 4251 & sleep 4251; wait"])
    agent = build_agent("cancel-1")
    wait_for_drone("cancel-1")
    build = build_trigger(job=job, trigger="api")
    wait_until(lambda: len(processes_with("sleep 4251")) >= 2, timeout=30, message="the step's processes")
    started = time.monotonic()
    response = httpx.post(f"{builds_live_url}/api/v1/builds/{build.pk}/cancel",
                          headers={"Authorization": f"Bearer {admin_api.token}"})
    assert response.status_code == 202 and response.json()["state"] == "canceling"
    wait_until(lambda: not processes_with("sleep 4251"), timeout=2 + 4, interval=0.1,
               message="every process of the step to be gone (grace 2 s)")
    assert time.monotonic() - started < 2 + 4
    done = wait_until(lambda: build_in(build.pk, BuildState.CANCELED, BuildState.FAILED, BuildState.SUCCESS),
                      timeout=20, message="the build to be canceled")
    assert done.state == BuildState.CANCELED, agent.log_text()[-3000:]


def test_silent_step_is_cancelled_by_the_agents_own_polling(builds_live_url, build_agent, tmp_path):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", steps=["sleep 4252"])
    agent = build_agent("poll-1")
    wait_for_drone("poll-1")
    build = build_trigger(job=job, trigger="api")
    wait_until(lambda: processes_with("sleep 4252"), timeout=30, message="the silent step")
    # Canceling without the WebSocket push (as if it were lost): only the agent's keep-alive can notice.
    Build.objects.filter(pk=build.pk).update(state=BuildState.CANCELING)
    wait_until(lambda: not processes_with("sleep 4252"), timeout=10, message="the silent step to be stopped")
    done = wait_until(lambda: build_in(build.pk, BuildState.CANCELED), timeout=20, message="canceled")
    assert done.state == BuildState.CANCELED, agent.log_text()[-2000:]


def test_overtime_build_fails_with_job_execution_timeout(builds_live_url, build_agent, tmp_path):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    job = make_job(scm_url=f"file://{tmp_path / 'repo'}", steps=["echo working; sleep 4253"], timeout=3,
                   retry={"max": 0})
    build_agent("timeout-1")
    wait_for_drone("timeout-1")
    build = build_trigger(job=job, trigger="api")
    done = wait_until(lambda: build_in(build.pk, BuildState.FAILED, BuildState.SUCCESS, BuildState.CANCELED),
                      timeout=30, message="the build to time out")
    assert done.state == BuildState.FAILED and done.failure_reason == FailureReason.JOB_EXECUTION_TIMEOUT
    assert "exceeded its timeout" in attempt_log(build.pk, 1)
    wait_until(lambda: not processes_with("sleep 4253"), timeout=10, message="the overtime step to be killed")
