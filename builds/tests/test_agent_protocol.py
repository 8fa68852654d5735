"""The drone side of the build protocol, over the API in-process: claim, start, log, finish, cancel."""
import hashlib

import pytest

from builds.choices import BuildState, FailureReason
from builds.models import Build, BuildAttempt, BuildEvent
from builds.services import build_cancel, build_trigger
from builds.tests.factories import make_drone, make_job

pytestmark = pytest.mark.django_db(transaction=True)


def claim(client, **body):
    return client.post("/api/v1/builds/request", {"free_slots": 1, **body}, format="json")


def patch_log(client, build_id, start, data: bytes, **headers):
    end = start + len(data) - 1
    return client.generic("PATCH", f"/api/v1/builds/{build_id}/log", data, content_type="text/plain",
                          HTTP_CONTENT_RANGE=f"{start}-{end}", **headers)


def test_claim_returns_204_when_nothing_is_pending():
    _, client = make_drone()
    assert claim(client).status_code == 204


def test_claim_hands_out_the_build_once_with_everything_to_run_it():
    job = make_job(steps=["echo one", "echo two"], env={"A": "1"}, labels=["linux"], secrets={"TOKEN": "s3cret"})
    build = build_trigger(job=job, trigger="api", branch="main")
    _, other = make_drone(labels=["windows"])
    assert claim(other).status_code == 204, "labels must be a subset of the drone's"
    drone, client = make_drone(labels=["linux", "x86"])
    response = claim(client)
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == build.pk and body["attempt"] == 1 and body["steps"] == ["echo one", "echo two"]
    assert body["env"]["A"] == "1" and body["secrets"] == {"TOKEN": "s3cret"} and body["log_offset"] == 0
    assert response["Job-Status"] == "assigned"
    build.refresh_from_db()
    assert build.state == BuildState.ASSIGNED and build.drone_id == drone.pk
    _, third = make_drone(labels=["linux"])
    assert claim(third).status_code == 204


def test_capacity_limits_claims():
    job = make_job()
    for _ in range(3):
        build_trigger(job=job, trigger="api")
    drone, client = make_drone(capacity=2)
    assert claim(client).status_code == 201
    assert claim(client).status_code == 201
    assert claim(client).status_code == 204
    assert Build.objects.filter(drone=drone).count() == 2


def test_higher_priority_queue_is_claimed_first():
    from builds.models import Queue

    low = make_job(queue=Queue.objects.get(name="test"))
    high = make_job()
    low_build = build_trigger(job=low, trigger="api")
    high_build = build_trigger(job=high, trigger="api")
    _, client = make_drone(capacity=2)
    assert claim(client).json()["id"] == high_build.pk
    assert claim(client).json()["id"] == low_build.pk


def test_full_run_with_log_ranges_and_checksum():
    job = make_job()
    build = build_trigger(job=job, trigger="api")
    _, client = make_drone()
    build_id = claim(client).json()["id"]
    response = client.put(f"/api/v1/builds/{build_id}/state", {"state": "running"}, format="json")
    assert response.status_code == 200 and response["Job-Status"] == "running"
    first, second = b"line one\n", b"line two\n"
    response = patch_log(client, build_id, 0, first)
    assert response.status_code == 202 and response["Range"] == f"0-{len(first)}"
    wrong = patch_log(client, build_id, 0, second)
    assert wrong.status_code == 416 and wrong["Range"] == f"0-{len(first)}"
    assert wrong.json()["error"] == "range_not_satisfiable"
    assert patch_log(client, build_id, len(first), second).status_code == 202
    log = first + second
    too_short = client.put(f"/api/v1/builds/{build_id}/state", {"state": "success", "log_bytesize": 3,
                                                                "log_checksum": "x"}, format="json")
    assert too_short.status_code == 416 and too_short["Range"] == f"0-{len(log)}"
    checksum = "sha256:" + hashlib.sha256(log).hexdigest()
    response = client.put(f"/api/v1/builds/{build_id}/state", {"state": "success", "exit_code": 0,
                                                                "log_bytesize": len(log), "log_checksum": checksum},
                          format="json")
    assert response.status_code == 200 and response.json()["state"] == "success"
    attempt = BuildAttempt.objects.get(build_id=build_id)
    assert attempt.log_checksum == checksum == attempt.log_checksum_reported
    text = client.get(f"/api/v1/builds/{build_id}/log")  # drone tokens may not read logs
    assert text.status_code == 403


def test_bad_content_range_is_a_clear_400():
    job = make_job()
    build_trigger(job=job, trigger="api")
    _, client = make_drone()
    build_id = claim(client).json()["id"]
    response = client.generic("PATCH", f"/api/v1/builds/{build_id}/log", b"abc", content_type="text/plain",
                              HTTP_CONTENT_RANGE="0-9")
    assert response.status_code == 400 and response.json()["field"] == "Content-Range"
    response = client.generic("PATCH", f"/api/v1/builds/{build_id}/log", b"abc", content_type="text/plain")
    assert response.status_code == 400


def test_another_drone_cannot_touch_the_build():
    job = make_job()
    build_trigger(job=job, trigger="api")
    _, client = make_drone()
    build_id = claim(client).json()["id"]
    _, intruder = make_drone()
    assert patch_log(intruder, build_id, 0, b"x").status_code == 404
    assert intruder.put(f"/api/v1/builds/{build_id}/state", {"state": "running"}, format="json").status_code == 404


def test_cancel_sets_job_status_header_and_finishes_as_canceled():
    job = make_job()
    build = build_trigger(job=job, trigger="api")
    _, client = make_drone()
    build_id = claim(client).json()["id"]
    client.put(f"/api/v1/builds/{build_id}/state", {"state": "running"}, format="json")
    build_cancel(build=build, actor="test")
    response = patch_log(client, build_id, 0, b"still going\n")
    assert response.status_code == 202 and response["Job-Status"] == "canceling"
    assert claim(client)["Swarm-Canceling-Builds"] == str(build_id)
    response = client.put(f"/api/v1/builds/{build_id}/state", {"state": "failed", "exit_code": -15,
                                                                "log_bytesize": 12}, format="json")
    assert response.json()["state"] == "canceled"
    assert BuildEvent.objects.filter(build_id=build_id, kind="cancel_requested").exists()


def test_script_failure_is_not_retried_by_default_but_runner_failure_is(settings):
    from django.utils import timezone

    from builds.services import builds_reap

    job = make_job()
    build = build_trigger(job=job, trigger="api")
    drone, client = make_drone()
    build_id = claim(client).json()["id"]
    client.put(f"/api/v1/builds/{build_id}/state", {"state": "running"}, format="json")
    Build.objects.filter(pk=build_id).update(lease_expires_at=timezone.now() - timezone.timedelta(seconds=1))
    report = builds_reap()
    assert report.lease_expired == [build_id]
    build.refresh_from_db()
    assert build.state == BuildState.PENDING and build.retries_used == 1 and drone.pk in build.avoid_drone_ids
    first = BuildAttempt.objects.get(build=build, number=1)
    assert first.failure_reason == FailureReason.RUNNER_SYSTEM_FAILURE
    assert claim(client).status_code == 204, "the failed drone is avoided for the retry"
    _, second_client = make_drone()
    assert claim(second_client).json()["attempt"] == 2
    second_client.put(f"/api/v1/builds/{build_id}/state", {"state": "running"}, format="json")
    second_client.put(f"/api/v1/builds/{build_id}/state", {"state": "failed", "exit_code": 1, "log_bytesize": 0},
                      format="json")
    build.refresh_from_db()
    assert build.state == BuildState.FAILED and build.failure_reason == FailureReason.SCRIPT_FAILURE


def test_source_failure_is_retried_by_default_and_a_reported_branch_fills_a_default_branch_build():
    job = make_job()  # no default_branch: the repository's own
    assert job.default_branch == ""
    build = build_trigger(job=job, trigger="api")
    assert build.branch == ""
    drone, client = make_drone()
    build_id = claim(client).json()["id"]
    running = client.put(f"/api/v1/builds/{build_id}/state", {"state": "running", "branch": "master"}, format="json")
    assert running.status_code == 200, running.content
    build.refresh_from_db()
    assert build.branch == "master"
    client.put(f"/api/v1/builds/{build_id}/state", {"state": "failed", "failure_reason": "source_failure",
                                                     "log_bytesize": 0}, format="json")
    build.refresh_from_db()
    assert build.state == BuildState.PENDING and build.retries_used == 1
    assert BuildAttempt.objects.get(build=build, number=1).failure_reason == FailureReason.SOURCE_FAILURE
    # A branch the trigger named is never replaced by the drone's report.
    named = build_trigger(job=job, trigger="api", branch="release")
    Build.objects.filter(pk=build.pk).update(state=BuildState.FAILED)
    _, other = make_drone()
    claimed = claim(other).json()
    assert claimed["id"] == named.pk and claimed["branch"] == "release"
    other.put(f"/api/v1/builds/{named.pk}/state", {"state": "running", "branch": "master"}, format="json")
    named.refresh_from_db()
    assert named.branch == "release"


def test_unacknowledged_claim_goes_back_to_the_queue():
    from django.utils import timezone

    from builds.services import builds_reap

    job = make_job()
    build = build_trigger(job=job, trigger="api")
    _, client = make_drone()
    claim(client)
    Build.objects.filter(pk=build.pk).update(ack_deadline=timezone.now() - timezone.timedelta(seconds=1))
    assert builds_reap().requeued_unacknowledged == [build.pk]
    build.refresh_from_db()
    assert build.state == BuildState.PENDING and build.retries_used == 0 and build.drone_id is None
    assert claim(client).json()["attempt"] == 2


def test_heartbeat_renews_reported_builds_and_names_the_ones_to_cancel():
    job = make_job()
    build_trigger(job=job, trigger="api")
    build_trigger(job=job, trigger="api")
    _, client = make_drone(capacity=2)
    first, second = claim(client).json()["id"], claim(client).json()["id"]
    for build_id in (first, second):
        client.put(f"/api/v1/builds/{build_id}/state", {"state": "running"}, format="json")
    Build.objects.filter(pk__in=(first, second)).update(lease_expires_at=None)
    build_cancel(build=Build.objects.get(pk=first), actor="test")
    build_cancel(build=Build.objects.get(pk=second), actor="test")
    leases = dict(Build.objects.filter(pk__in=(first, second)).values_list("pk", "lease_expires_at"))

    answer = client.post("/api/v1/drones/heartbeat", {"metrics": {}, "running_build_ids": [first]}, format="json")
    assert answer.status_code == 200
    # Only builds the agent runs are named: it cannot stop the ones it does not run.
    assert answer.json()["cancel_build_ids"] == [first]
    renewed = dict(Build.objects.filter(pk__in=(first, second)).values_list("pk", "lease_expires_at"))
    assert renewed[first] is not None and renewed[first] != leases[first]
    assert renewed[second] == leases[second]

    idle = client.post("/api/v1/drones/heartbeat", {"metrics": {}}, format="json")
    assert idle.status_code == 200 and "cancel_build_ids" not in idle.json()


def test_a_claim_whose_job_credential_no_key_decrypts_fails_the_build_and_hands_out_nothing():
    from cryptography.fernet import Fernet

    from builds.models import Job

    job = make_job(scm_credential="user:pw", secrets={"TOKEN": "s3cret"}, retry={"max": 2, "when": ["always"]})
    # Written under a key this server no longer has (e.g. dropped from SWARM_SECRETS_KEYS too early).
    lost_key = Fernet(Fernet.generate_key())
    Job.objects.filter(pk=job.pk).update(scm_credential_encrypted=lost_key.encrypt(b"user:pw").decode())
    build = build_trigger(job=job, trigger="api")
    _, client = make_drone()
    response = claim(client)
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["error"] == "secret_undecryptable" and "scm_credential" not in body
    assert f"builds.Job {job.pk} scm_credential_encrypted" in body["detail"]
    assert "SWARM_SECRETS_KEYS" in body["detail"] and "user:pw" not in response.content.decode()
    build.refresh_from_db()
    assert build.state == BuildState.FAILED and build.failure_reason == FailureReason.RUNNER_SYSTEM_FAILURE
    assert build.retries_used == 0, "another attempt would fail the same way"
    attempt = BuildAttempt.objects.get(build=build)
    assert attempt.state == "failed" and "scm_credential_encrypted" in attempt.detail
    events = list(BuildEvent.objects.filter(build=build).values_list("kind", "detail"))
    assert [kind for kind, _ in events][-2:] == ["secret_undecryptable", "finished"]
    assert events[-2][1]["secret"] == f"builds.Job {job.pk} scm_credential_encrypted"
    assert "Put the key it was written with back" in events[-1][1]["detail"]
    assert claim(client).status_code == 204, "the build is not handed out again"
