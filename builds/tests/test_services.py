"""Services on their own: the reaper's other cases, queue limits, nudges, log archiving, artifacts, notifications."""
import hashlib
import io
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import mail
from django.utils import timezone

from builds.choices import ArtifactState, BuildState, FailureReason
from builds.models import Build, BuildAttempt, BuildEvent, BuildLogChunk, Queue
from builds.notifications import build_notify_finished
from builds.services import (
    artifact_announce,
    artifact_store_stream,
    attempt_archive_log,
    attempt_log_iter,
    build_claim,
    build_finish_from_agent,
    build_log_append,
    build_nudge_idle_drones,
    build_set_running,
    build_trigger,
    builds_reap,
)
from builds.tests.factories import make_drone, make_job
from swarm.core.errors import ApiError

pytestmark = pytest.mark.django_db


def running_build(job=None, drone=None):
    job = job or make_job()
    build = build_trigger(job=job, trigger="api")
    drone = drone or make_drone()[0]
    build_claim(drone=drone)
    build_set_running(build_id=build.pk, drone=drone)
    build.refresh_from_db()
    return build, drone


def test_pending_too_long_is_stuck_or_timeout_failure(settings):
    settings.SWARM_BUILD_PENDING_LIMIT = 60
    build = build_trigger(job=make_job(), trigger="api")
    assert builds_reap().stuck == []
    Build.objects.filter(pk=build.pk).update(queued_at=timezone.now() - timedelta(seconds=61))
    assert builds_reap().stuck == [build.pk]
    build.refresh_from_db()
    assert build.state == BuildState.FAILED and build.failure_reason == FailureReason.STUCK_OR_TIMEOUT_FAILURE


def test_overtime_is_job_execution_timeout_and_the_drone_is_told_to_kill(settings):
    settings.SWARM_BUILD_TIMEOUT_GRACE = 5
    build, drone = running_build(make_job(timeout=10, retry={"max": 3, "when": ["always"]}))
    layer = get_channel_layer()
    from drones.events import drone_group

    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(drone_group(drone.pk), channel)
    Build.objects.filter(pk=build.pk).update(started_at=timezone.now() - timedelta(seconds=14))
    assert builds_reap().timed_out == []
    Build.objects.filter(pk=build.pk).update(started_at=timezone.now() - timedelta(seconds=16))
    with _captured_on_commit():
        assert builds_reap().timed_out == [build.pk]
    build.refresh_from_db()
    assert build.state == BuildState.FAILED and build.failure_reason == FailureReason.JOB_EXECUTION_TIMEOUT
    assert build.retries_used == 0, "a timeout is final even when the policy says always"
    message = async_to_sync(layer.receive)(channel)
    assert message["message"]["type"] == "cancel_build" and message["message"]["build_id"] == build.pk


class _captured_on_commit:
    """Run on_commit callbacks of a `django_db` (transaction-wrapped) test at the end of the block."""

    def __enter__(self):
        from django.test import TestCase

        self._context = TestCase.captureOnCommitCallbacks(execute=True)
        return self._context.__enter__()

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)


def test_queue_concurrency_cap_and_tenant_rate_limit(tenant):
    capped = Queue.objects.create(name="capped", priority=90, max_concurrent=1)
    job = make_job(queue=capped)
    build_trigger(job=job, trigger="api")
    build_trigger(job=job, trigger="api")
    first, _ = make_drone(capacity=5)
    assert build_claim(drone=first) is not None
    assert build_claim(drone=first) is None, "the queue holds one build at a time"
    rated = Queue.objects.create(name="rated", priority=80, tenant_rate_limit_per_minute=2)
    tenant_job = make_job(queue=rated, tenant=tenant)
    for _ in range(3):
        build_trigger(job=tenant_job, trigger="api")
    second, _ = make_drone(capacity=5)
    assert build_claim(drone=second).build.job == tenant_job
    assert build_claim(drone=second).build.job == tenant_job
    assert build_claim(drone=second) is None, "two starts a minute for this tenant"


def test_paused_drone_gets_nothing_and_idle_drones_are_nudged():
    job = make_job(labels=["gpu"])
    idle, _ = make_drone(labels=["gpu"])
    make_drone(labels=["cpu"])
    busy, _ = make_drone(labels=["gpu"], capacity=1)
    build_trigger(job=make_job(labels=["gpu"]), trigger="api")
    assert build_claim(drone=busy) is not None
    layer = get_channel_layer()
    from drones.events import drone_group

    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(drone_group(idle.pk), channel)
    build = build_trigger(job=job, trigger="api")
    assert build_nudge_idle_drones(build_id=build.pk) == 1, "only the idle drone with the label"
    assert async_to_sync(layer.receive)(channel)["message"] == {"type": "build_available", "build_id": build.pk}
    idle.status = "paused"
    idle.save()
    assert build_claim(drone=idle) is None


def test_finished_log_is_archived_to_storage_and_still_readable():
    build, drone = running_build()
    data = b"".join(f"line {i}\n".encode() for i in range(2000))
    build_log_append(build_id=build.pk, drone=drone, start=0, data=data[:5000])
    build_log_append(build_id=build.pk, drone=drone, start=5000, data=data[5000:])
    checksum = "sha256:" + hashlib.sha256(data).hexdigest()
    build_finish_from_agent(build_id=build.pk, drone=drone, state="success", exit_code=0, log_bytesize=len(data),
                            log_checksum=checksum)
    attempt = BuildAttempt.objects.get(build=build)
    assert attempt_archive_log(attempt_id=attempt.pk) is True
    assert attempt_archive_log(attempt_id=attempt.pk) is False, "idempotent"
    attempt.refresh_from_db()
    assert attempt.log_storage_key.startswith(f"builds/{build.pk}/attempts/1/")
    assert not BuildLogChunk.objects.filter(attempt=attempt).exists()
    assert b"".join(attempt_log_iter(attempt=attempt)) == data
    assert b"".join(attempt_log_iter(attempt=attempt, offset=5003)) == data[5003:]
    with pytest.raises(ApiError) as refused:
        build_log_append(build_id=build.pk, drone=drone, start=len(data), data=b"late\n")
    assert refused.value.code == "log_archived"


def test_artifact_with_wrong_sha256_keeps_nothing():
    build, drone = running_build()
    content = b"binary-artifact" * 1000
    artifact = artifact_announce(build_id=build.pk, drone=drone, path="dist/app.bin", size=len(content),
                                 sha256=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(ApiError) as refused:
        artifact_store_stream(artifact=artifact, stream=io.BytesIO(content))
    assert refused.value.code == "sha256_mismatch"
    artifact.refresh_from_db()
    assert artifact.state == ArtifactState.PENDING
    from bundles.blobstore import BlobStore

    assert not BlobStore().exists(artifact.storage_key)
    with pytest.raises(ApiError):
        artifact_announce(build_id=build.pk, drone=drone, path="../escape", size=1, sha256="0" * 64)


class _Receiver(BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        _Receiver.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        return


def test_completion_notifications_by_email_and_webhook(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        job = make_job(name="notified", retry={"max": 0}, notifications={
            "email": ["team@example.com"], "webhook": f"http://127.0.0.1:{server.server_port}/hook",
            "on": ["failed"]})
        build, drone = running_build(job)
        build_finish_from_agent(build_id=build.pk, drone=drone, state="failed", exit_code=2, log_bytesize=0,
                                log_checksum="")
        assert build_notify_finished(build_id=build.pk) == ["email", "webhook"]
        assert build_notify_finished(build_id=build.pk) == [], "sent once whatever the redeliveries"
    finally:
        server.shutdown()
    assert mail.outbox[0].to == ["team@example.com"] and "notified #1 failed" in mail.outbox[0].subject
    assert _Receiver.bodies[-1]["build"]["state"] == "failed" and _Receiver.bodies[-1]["build"]["exit_code"] == 2
    assert BuildEvent.objects.filter(build=build, kind="notified").count() == 2
    ok_build, ok_drone = running_build(job)
    build_finish_from_agent(build_id=ok_build.pk, drone=ok_drone, state="success", exit_code=0, log_bytesize=0,
                            log_checksum="")
    assert build_notify_finished(build_id=ok_build.pk) == [], "only failures were asked for"


def test_metrics_endpoint_exports_build_gauges_and_claim_latency(client, admin_api):
    build_trigger(job=make_job(), trigger="api")
    _, drone_client = make_drone()
    drone_client.post("/api/v1/builds/request", {"free_slots": 1}, format="json")
    build_trigger(job=make_job(queue=Queue.objects.get(name="test")), trigger="api")
    text = client.get("/metrics").content.decode()
    assert 'swarm_build_queue_depth{queue="test"} 1.0' in text
    assert 'swarm_builds{state="assigned"} 1.0' in text
    assert 'swarm_drones{escalation_level="0",status="online"}' in text
    assert "swarm_build_claim_seconds_count" in text
    assert "django_http_requests_total_by_method_total" in text


def test_heartbeat_renews_leases_and_reports_cancels_in_one_query(django_assert_num_queries):
    from builds.heartbeat import builds_on_heartbeat
    from builds.services import build_cancel

    build, drone = running_build()
    Build.objects.filter(pk=build.pk).update(lease_expires_at=timezone.now())
    with django_assert_num_queries(0):
        assert builds_on_heartbeat(drone.pk, {"running_build_ids": []}) is None
    with django_assert_num_queries(1):
        assert builds_on_heartbeat(drone.pk, {"running_build_ids": [build.pk]}) is None
    build.refresh_from_db()
    assert build.lease_expires_at > timezone.now() + timedelta(seconds=30)
    build_cancel(build=build, actor="test")
    assert builds_on_heartbeat(drone.pk, {"running_build_ids": [build.pk, 999999]}) == {"cancel_build_ids": [build.pk]}
    other, _ = make_drone()
    assert builds_on_heartbeat(other.pk, {"running_build_ids": [build.pk]}) is None, "only the holder renews"
