"""Claims and log appends on the event loop (builds/fastpath.py): the views' effects, and the views for the rest."""
import hashlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from builds.models import Build, BuildAttempt, BuildEvent, Queue
from builds.services import attempt_log_checksum, build_cancel, build_claim, build_set_running, build_trigger
from builds.tests.factories import make_drone, make_job
from conftest import fast_route_call, token_client
from drones.models import Drone
from swarm.core.fast_routes import FastRoutes
from swarm.urls import FAST_ROUTES
from swarm.core.models import ApiToken
from swarm.core.tokens import split_prefix

pytestmark = pytest.mark.django_db(transaction=True)

TIMING_KEYS = {"id", "number", "lease_expires_at", "env"}


@pytest.fixture
def routes():
    return FastRoutes(FAST_ROUTES, fallback=None)


def fast_claim(routes, client, body=None):
    raw = json.dumps({"free_slots": 1} if body is None else body).encode()
    return fast_route_call(routes, "POST", "/api/v1/builds/request", token=client.token, body=raw)


def test_fast_claim_hands_out_what_the_view_hands_out(routes):
    job = make_job(steps=["make", "make test"], env={"A": "1"}, labels=["linux"], secrets={"TOKEN": "s3cret"},
                   artifacts=["dist/*"], scm_credential="user:pw")
    first = build_trigger(job=job, trigger="api", branch="main", params={"P": "2"})
    second = build_trigger(job=job, trigger="api", branch="main", params={"P": "2"})
    _, fast_client = make_drone(labels=["linux"])
    _, view_client = make_drone(labels=["linux"])

    fast = fast_claim(routes, fast_client)
    assert not fast["django"] and fast["status"] == 201 and fast["headers"]["job-status"] == "assigned"
    view = view_client.post("/api/v1/builds/request", {"free_slots": 1}, format="json")
    assert view.status_code == 201
    fast_body, view_body = json.loads(fast["body"]), view.json()
    assert {fast_body["id"], view_body["id"]} == {first.pk, second.pk}
    assert {k: v for k, v in fast_body.items() if k not in TIMING_KEYS} == \
        {k: v for k, v in view_body.items() if k not in TIMING_KEYS}
    assert fast_body["secrets"] == {"TOKEN": "s3cret"} and fast_body["scm_credential"] == "user:pw"
    assert fast_body["env"]["P"] == "2" and fast_body["env"]["SWARM_BUILD_ID"] == str(fast_body["id"])

    claimed = Build.objects.get(pk=fast_body["id"])
    assert claimed.state == "assigned" and claimed.drone_id == fast_client.drone.pk and claimed.attempt_count == 1
    assert BuildAttempt.objects.filter(build=claimed, number=1, drone=fast_client.drone).exists()
    assert BuildEvent.objects.filter(build=claimed, kind="claimed").exists()


def test_fast_claim_of_a_build_whose_job_secrets_no_key_decrypts_fails_it_and_hands_out_nothing(routes):
    from cryptography.fernet import Fernet

    from builds.models import Job

    job = make_job(scm_credential="user:pw", secrets={"TOKEN": "s3cret"})
    lost_key = Fernet(Fernet.generate_key())
    Job.objects.filter(pk=job.pk).update(secrets_encrypted=lost_key.encrypt(b'{"TOKEN": "s3cret"}').decode())
    build = build_trigger(job=job, trigger="api")
    _, client = make_drone()
    answer = fast_claim(routes, client)
    assert not answer["django"] and answer["status"] == 409
    body = json.loads(answer["body"])
    assert body["error"] == "secret_undecryptable" and f"builds.Job {job.pk} secrets_encrypted" in body["detail"]
    assert b"s3cret" not in answer["body"] and b"user:pw" not in answer["body"]
    build.refresh_from_db()
    assert build.state == "failed" and build.failure_reason == "runner_system_failure"
    assert list(BuildEvent.objects.filter(build=build).values_list("kind", flat=True))[-2:] == [
        "secret_undecryptable", "finished"]
    assert fast_claim(routes, client)["status"] == 204


def test_nothing_to_claim_paused_drones_and_a_full_drone_get_204(routes):
    drone, client = make_drone(capacity=1)
    assert fast_claim(routes, client)["status"] == 204
    build_trigger(job=make_job(), trigger="api")
    Drone.objects.filter(pk=drone.pk).update(status="paused")
    answer = fast_claim(routes, client)
    assert not answer["django"] and answer["status"] == 204
    Drone.objects.filter(pk=drone.pk).update(status="online")
    assert fast_claim(routes, client)["status"] == 201
    build_trigger(job=make_job(), trigger="api")
    assert fast_claim(routes, client)["status"] == 204, "capacity 1 is taken"
    assert fast_claim(routes, client, {"free_slots": 0})["status"] == 204


def test_claim_renews_leases_names_canceling_builds_and_marks_the_token_used(routes):
    drone, client = make_drone(capacity=3)
    running = build_trigger(job=make_job(), trigger="api")
    assert fast_claim(routes, client)["status"] == 201
    soon = timezone.now() + timedelta(seconds=5)
    Build.objects.filter(pk=running.pk).update(state="running", lease_expires_at=soon)
    ApiToken.objects.filter(prefix=split_prefix(client.token)).update(last_used_at=None)
    answer = fast_claim(routes, client)
    assert answer["status"] == 204 and "swarm-canceling-builds" not in answer["headers"]
    assert Build.objects.get(pk=running.pk).lease_expires_at > soon
    assert ApiToken.objects.get(prefix=split_prefix(client.token)).last_used_at is not None
    build_cancel(build=Build.objects.get(pk=running.pk))
    answer = fast_claim(routes, client)
    assert answer["headers"]["swarm-canceling-builds"] == str(running.pk)


@pytest.mark.parametrize("body", [
    {"free_slots": "1"}, {"free_slots": -1}, {"free_slots": True}, {"labels": "linux"}, {"labels": [" linux"]},
    [1, 2],
])
def test_a_body_the_view_would_judge_goes_to_the_view_unchanged(routes, body):
    build_trigger(job=make_job(), trigger="api")
    _, client = make_drone()
    answer = fast_claim(routes, client, body)
    assert answer["django"] and json.loads(answer["django_body"]) == body
    assert Build.objects.filter(state="pending").count() == 1


def test_queue_limits_and_foreign_tokens_go_to_the_view(routes):
    build_trigger(job=make_job(), trigger="api")
    _, client = make_drone()
    Queue.objects.filter(name="default").update(max_concurrent=5)
    assert fast_claim(routes, client)["django"]
    Queue.objects.filter(name="default").update(max_concurrent=None)
    assert fast_claim(routes, token_client("admin"))["django"]
    assert Build.objects.filter(state="pending").count() == 1
    assert fast_claim(routes, client)["status"] == 201


def running_build(capacity: int = 1):
    """A build claimed and started by a fresh drone; returns (build, drone client)."""
    build = build_trigger(job=make_job(), trigger="api")
    drone, client = make_drone(capacity=capacity)
    build_claim(drone=drone)
    build_set_running(build_id=build.pk, drone=drone)
    return build, client


def patch_log(routes, client, build_id: int, start: int, data: bytes, attempt: int | None = None):
    headers = {"Content-Range": f"{start}-{start + len(data) - 1}"}
    if attempt is not None:
        headers["Build-Attempt"] = str(attempt)
    return fast_route_call(routes, "PATCH", f"/api/v1/builds/{build_id}/log", token=client.token, body=data,
                           headers=headers)


def test_log_appends_in_order_are_stored_on_the_event_loop(routes):
    build, client = running_build()
    pieces = [b"step 1\n", b"\x00\xffbinary-safe\n" * 500, b"done\n"]
    offset = 0
    for piece in pieces:
        answer = patch_log(routes, client, build.pk, offset, piece, attempt=1)
        offset += len(piece)
        assert not answer["django"] and answer["status"] == 202
        assert answer["headers"]["range"] == f"0-{offset}" and answer["headers"]["job-status"] == "running"
        assert answer["headers"]["content-length"] == "0", "an empty 202 says so (not chunked)"
    attempt = BuildAttempt.objects.get(build=build, number=1)
    assert attempt.log_size == offset
    assert attempt_log_checksum(attempt=attempt) == "sha256:" + hashlib.sha256(b"".join(pieces)).hexdigest()


def test_log_patches_refused_after_the_token_check_get_the_views_answer_on_the_event_loop(routes):
    """Once the token is checked (and its leases renewed) the event loop answers: the view's status and error."""
    build, client = running_build()
    assert patch_log(routes, client, build.pk, 0, b"first\n")["status"] == 202
    cases = [
        (build.pk, 0, b"again\n", None, 416, "range_not_satisfiable"),  # wrong offset, with the stored size
        (build.pk, 6, b"more\n", 2, 409, "attempt_superseded"),  # an attempt that is not the current one
        (build.pk + 1000, 0, b"x", None, 404, "not_found"),  # not this drone's build
    ]
    for build_id, start, data, attempt, status, code in cases:
        answer = patch_log(routes, client, build_id, start, data, attempt)
        assert not answer["django"] and answer["status"] == status, answer
        assert json.loads(answer["body"])["error"] == code
        headers = {"HTTP_CONTENT_RANGE": f"{start}-{start + len(data) - 1}"}
        if attempt is not None:
            headers["HTTP_BUILD_ATTEMPT"] = str(attempt)
        view = client.generic("PATCH", f"/api/v1/builds/{build_id}/log", data, content_type="text/plain",
                              **headers)
        assert view.status_code == status and view.json() == json.loads(answer["body"])
        assert answer["headers"].get("range") == view.headers.get("Range")
        assert answer["headers"].get("job-status") == view.headers.get("Job-Status")
    _, other = make_drone()
    refused = patch_log(routes, other, build.pk, 6, b"more\n")
    assert not refused["django"] and refused["status"] == 404
    mismatched = fast_route_call(routes, "PATCH", f"/api/v1/builds/{build.pk}/log", token=client.token,
                                 body=b"abc", headers={"content-range": "6-99"})
    assert mismatched["django"], "a header the parser refuses: the view authenticates first, then says 400"
    BuildAttempt.objects.filter(build=build).update(log_storage_key="logs/archived")
    archived = patch_log(routes, client, build.pk, 6, b"more\n")
    assert not archived["django"] and archived["status"] == 409
    assert json.loads(archived["body"])["error"] == "log_archived"
    assert BuildAttempt.objects.get(build=build).log_size == 6


def test_a_log_patch_with_an_unknown_token_goes_to_the_view_with_nothing_written(routes):
    build, client = running_build()
    unknown = client.token[:-4] + ("aaaa" if not client.token.endswith("aaaa") else "bbbb")
    before = Build.objects.get(pk=build.pk).lease_expires_at
    answer = fast_route_call(routes, "PATCH", f"/api/v1/builds/{build.pk}/log", token=unknown, body=b"x",
                             headers={"content-range": "0-0"})
    assert answer["django"] and answer["django_body"] == b"x"
    assert BuildAttempt.objects.get(build=build).log_size == 0
    assert Build.objects.get(pk=build.pk).lease_expires_at == before


def test_a_claim_that_cannot_be_described_is_a_500_not_a_second_claim(routes, monkeypatch):
    first = build_trigger(job=make_job(), trigger="api")
    build_trigger(job=make_job(), trigger="api")
    _, client = make_drone(capacity=2)

    def broken(result):
        raise ValueError("cannot describe")

    monkeypatch.setattr("builds.fastpath.claim_payload", broken)
    answer = fast_claim(routes, client)
    assert not answer["django"] and answer["status"] == 500
    assert json.loads(answer["body"])["error"] == "server_error"
    assert list(Build.objects.filter(state="assigned").values_list("pk", flat=True)) == [first.pk]


def test_heartbeat_reporting_running_builds_renews_leases_and_names_cancels_on_the_event_loop(routes):
    build, client = running_build(capacity=2)
    soon = timezone.now() + timedelta(seconds=5)
    Build.objects.filter(pk=build.pk).update(lease_expires_at=soon)
    body = json.dumps({"metrics": {}, "running_build_ids": [build.pk, 10**30, "x"]}).encode()
    answer = fast_route_call(routes, "POST", "/api/v1/drones/heartbeat", token=client.token, body=body)
    assert not answer["django"] and answer["status"] == 200
    assert "cancel_build_ids" not in json.loads(answer["body"])
    assert Build.objects.get(pk=build.pk).lease_expires_at > soon
    build_cancel(build=Build.objects.get(pk=build.pk))
    answer = fast_route_call(routes, "POST", "/api/v1/drones/heartbeat", token=client.token, body=body)
    assert not answer["django"] and json.loads(answer["body"])["cancel_build_ids"] == [build.pk]
