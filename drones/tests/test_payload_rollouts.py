"""Payload versions, releases and the rollout engine through the API, the services and the agent endpoints."""
from __future__ import annotations

import hashlib
import json

import pytest
from django.utils import timezone

from bundles.models import Bundle
from drones.models import Drone
from drones.payloads.engine import rollout_advance
from drones.payloads.models import DronePayloadState, PayloadEvent, PayloadVersion, Rollout, RolloutTarget
from drones.tests.payload_support import agent_report, keep_alive, live_drones, push_payload

pytestmark = pytest.mark.django_db


def start(client, **body):
    defaults = {"payload_type": "toolchain", "version": "1.0.0", "target": {"all": True}, "min_healthy_time": 0}
    return client.post("/api/v1/rollouts", {**defaults, **body}, format="json")


def test_push_stores_bytes_once_dedupes_and_keeps_versions_immutable(admin_api):
    first = push_payload(admin_api, version="1.0.0")
    assert first.status_code == 201, first.content
    assert first.json()["type"] == "toolchain" and len(first.json()["sha256"]) == 64
    again = push_payload(admin_api, version="1.0.0")
    assert again.status_code == 200 and again.json()["deduplicated"] is True
    other = push_payload(admin_api, version="1.0.0", files={"other": "bytes"})
    assert other.status_code == 409 and other.json()["error"] == "version_exists"
    # The same bytes as another type's version: one blob, two versions.
    assert push_payload(admin_api, type_name="portage-config", version="v2026.12.01",
                        files={"bin/tool": "#!/bin/sh\necho 1.0.0\n"}).status_code == 201
    assert Bundle.objects.count() == 1 and PayloadVersion.objects.count() == 2
    assert push_payload(admin_api, version="not a version", files={"x": "1"}).json()["error"] == "invalid_version"


def test_hostile_payload_bundle_is_refused_and_nothing_is_kept(admin_api):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("/etc/cron.d/evil")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    answer = push_payload(admin_api, data=buffer.getvalue())
    assert answer.status_code == 400 and answer.json()["error"] == "absolute_path"
    assert not Bundle.objects.exists() and not PayloadVersion.objects.exists()


def test_release_manifest_is_canonical_json_with_its_sha256(admin_api):
    push_payload(admin_api, version="1.0.0")
    push_payload(admin_api, type_name="portage-config", version="2.0.0", files={"make.conf": "CFLAGS=-O2"})
    answer = admin_api.post("/api/v1/releases", {"payloads": {"toolchain": "1.0.0", "portage-config": "2.0.0"}},
                            format="json")
    assert answer.status_code == 201, answer.content
    release = answer.json()
    assert release["name"] == f"v{timezone.localdate():%Y.%m.%d}"
    assert [item["type"] for item in release["manifest"]["payloads"]] == ["portage-config", "toolchain"]
    download = admin_api.get(release["manifest_url"])
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == release["manifest_sha256"] \
        == download["X-Swarm-Manifest-Sha256"]
    assert download.content == json.dumps(json.loads(download.content), sort_keys=True,
                                          separators=(",", ":")).encode()
    second = admin_api.post("/api/v1/releases", {"payloads": {"toolchain": "1.0.0"}}, format="json").json()
    assert second["name"] == release["name"] + ".1"
    taken = admin_api.post("/api/v1/releases", {"name": release["name"], "payloads": {"toolchain": "1.0.0"}},
                           format="json")
    assert taken.status_code == 409


def test_canary_then_promotion_then_waves_within_max_parallel(admin_api):
    push_payload(admin_api)
    drones = live_drones(5)
    answer = start(admin_api, canary=1, max_parallel=2)
    assert answer.status_code == 202 and answer["Location"] == answer.json()["url"]
    rollout = Rollout.objects.get(pk=answer.json()["id"])
    assert admin_api.post(f"/api/v1/rollouts/{rollout.pk}/promote").status_code == 409  # not awaiting promotion

    step = rollout_advance(rollout_id=rollout.pk)
    assert step.state == "running" and step.dispatched == 1
    message = step.messages[0][1]
    assert message["type"] == "deploy_payload" and message["sha256"] == PayloadVersion.objects.get().sha256
    canary = RolloutTarget.objects.get(rollout=rollout, is_canary=True)
    client = dict((drone.pk, api) for drone, api in drones)[canary.drone_id]
    assert agent_report(client, canary.pk, "downloading", "installing", "verifying", "succeeded",
                        sha256=message["sha256"]).status_code == 204
    assert rollout_advance(rollout_id=rollout.pk).state == "awaiting_promotion"
    promoted = admin_api.post(f"/api/v1/rollouts/{rollout.pk}/promote")
    assert promoted.status_code == 202 and promoted.json()["url"] == f"/api/v1/rollouts/{rollout.pk}"

    remaining = 4
    while remaining:
        keep_alive(*[drone for drone, _ in drones])
        step = rollout_advance(rollout_id=rollout.pk)
        in_flight = RolloutTarget.objects.filter(rollout=rollout, state="pending", dispatched_at__isnull=False)
        assert 0 < in_flight.count() <= 2
        for target in in_flight:
            client = dict((drone.pk, api) for drone, api in drones)[target.drone_id]
            agent_report(client, target.pk, "downloading", "succeeded", sha256=message["sha256"])
            remaining -= 1
    assert rollout_advance(rollout_id=rollout.pk).state == "succeeded"
    rollout.refresh_from_db()
    assert rollout.finished_at is not None
    desired = set(DronePayloadState.objects.values_list("desired_version__version", flat=True))
    assert desired == {"1.0.0"}
    kinds = list(PayloadEvent.objects.filter(rollout=rollout).values_list("to_state", flat=True))
    assert kinds.count("succeeded") >= 6 and "awaiting_promotion" in kinds  # 5 drones + the rollout itself
    progress = admin_api.get(f"/api/v1/rollouts/{rollout.pk}").json()["progress"]
    assert progress["done"] == progress["total"] == 5 and progress["percent"] == 100.0


def test_failures_over_the_budget_auto_revert_everyone(admin_api):
    push_payload(admin_api, version="1.0.0")
    push_payload(admin_api, version="2.0.0", files={"v": "2"})
    drones = live_drones(3)
    clients = {drone.pk: api for drone, api in drones}
    DronePayloadState.objects.bulk_create([
        DronePayloadState(drone=drone, payload_type_id=PayloadVersion.objects.get(version="1.0.0").payload_type_id,
                          desired_version=PayloadVersion.objects.get(version="1.0.0")) for drone, _ in drones])
    rollout = Rollout.objects.get(pk=start(admin_api, version="2.0.0", max_parallel=3, auto_revert=True).json()["id"])
    assert rollout_advance(rollout_id=rollout.pk).dispatched == 3
    first, second, third = RolloutTarget.objects.filter(rollout=rollout).order_by("position")
    agent_report(clients[first.drone_id], first.pk, "succeeded")
    agent_report(clients[second.drone_id], second.pk, "downloading", "failed", reason="health check exited 1")
    step = rollout_advance(rollout_id=rollout.pk)
    assert step.state == "reverting"
    reverts = [message for _, message in step.messages if message["action"] == "revert"]
    assert {message["target_id"] for message in reverts} == {first.pk, third.pk}
    assert reverts[0]["version"] == "1.0.0"
    second.refresh_from_db()
    assert second.state == "reverted"  # the agent never left the failed release live
    for target in (first, third):
        agent_report(clients[target.drone_id], target.pk, "succeeded", action="revert")
    assert rollout_advance(rollout_id=rollout.pk).state == "reverted"
    assert set(RolloutTarget.objects.filter(rollout=rollout).values_list("state", flat=True)) == {"reverted"}
    assert set(DronePayloadState.objects.values_list("desired_version__version", flat=True)) == {"1.0.0"}


def test_a_second_rollout_on_the_same_drone_and_type_is_refused_naming_the_first(admin_api):
    push_payload(admin_api, version="1.0.0")
    push_payload(admin_api, version="2.0.0", files={"v": "2"})
    live_drones(2)
    first = start(admin_api, version="1.0.0").json()
    clash = start(admin_api, version="2.0.0", target={"names": ["d01"]})
    assert clash.status_code == 409 and clash.json()["error"] == "rollout_conflict"
    assert f"Rollout {first['id']}" in clash.json()["detail"] and clash["Swarm-Conflicting-Rollout"] == str(first["id"])
    assert admin_api.post(f"/api/v1/rollouts/{first['id']}/abort").status_code == 202
    assert start(admin_api, version="2.0.0", target={"names": ["d01"]}).status_code == 202


def test_offline_and_paused_drones_are_skipped_and_a_silent_drone_fails_its_deadline(admin_api):
    push_payload(admin_api)
    drones = live_drones(3)
    Drone.objects.filter(name="d00").update(status="paused")
    Drone.objects.filter(name="d01").update(last_heartbeat_at=timezone.now() - timezone.timedelta(minutes=5))
    rollout_id = start(admin_api, max_parallel=3, healthy_deadline=0.5, min_healthy_time=0).json()["id"]
    step = rollout_advance(rollout_id=rollout_id)
    assert step.dispatched == 1
    states = dict(RolloutTarget.objects.filter(rollout_id=rollout_id).values_list("drone__name", "state"))
    assert states == {"d00": "skipped", "d01": "skipped", "d02": "pending"}
    RolloutTarget.objects.filter(rollout_id=rollout_id, drone__name="d02").update(
        dispatched_at=timezone.now() - timezone.timedelta(seconds=1))
    keep_alive(*[drone for drone, _ in drones])
    step = rollout_advance(rollout_id=rollout_id)
    target = RolloutTarget.objects.get(rollout_id=rollout_id, drone__name="d02")
    assert target.state == "failed" and target.reason.startswith("healthy_deadline")
    assert step.state == "failed"  # budget 0, no auto_revert


def test_reports_are_forward_only_idempotent_and_only_for_the_drones_own_targets(admin_api):
    push_payload(admin_api)
    (drone, client), (_, other_client) = live_drones(2)
    rollout_id = start(admin_api, target={"names": [drone.name]}).json()["id"]
    rollout_advance(rollout_id=rollout_id)
    target = RolloutTarget.objects.get(rollout_id=rollout_id)
    assert agent_report(other_client, target.pk, "downloading").status_code == 404
    assert agent_report(client, target.pk, "installing").status_code == 204
    assert agent_report(client, target.pk, "downloading").status_code == 204  # late and out of order: ignored
    target.refresh_from_db()
    assert target.state == "installing"
    events = PayloadEvent.objects.filter(target=target).count()
    agent_report(client, target.pk, "installing")
    assert PayloadEvent.objects.filter(target=target).count() == events
    pending = client.get("/api/v1/payloads/agent/pending").json()["commands"]
    assert [command["target_id"] for command in pending] == [target.pk]
    assert other_client.get("/api/v1/payloads/agent/pending").json()["commands"] == []


def test_percent_failure_budget_and_pause_resume(admin_api):
    push_payload(admin_api)
    drones = live_drones(4)
    answer = start(admin_api, max_parallel=4, failure_budget="25%")
    rollout_id = answer.json()["id"]
    assert admin_api.post(f"/api/v1/rollouts/{rollout_id}/pause").status_code == 202
    assert rollout_advance(rollout_id=rollout_id).dispatched == 0
    assert admin_api.post(f"/api/v1/rollouts/{rollout_id}/resume").status_code == 202
    assert rollout_advance(rollout_id=rollout_id).dispatched == 4
    clients = {drone.pk: api for drone, api in drones}
    targets = list(RolloutTarget.objects.filter(rollout_id=rollout_id).order_by("position"))
    agent_report(clients[targets[0].drone_id], targets[0].pk, "failed", reason="disk_full")
    for target in targets[1:]:
        agent_report(clients[target.drone_id], target.pk, "succeeded")
    assert rollout_advance(rollout_id=rollout_id).state == "succeeded"  # 1 of 4 failed = 25 %: within budget


@pytest.mark.django_db(transaction=True)
def test_reports_on_the_event_loop_follow_the_same_rules_and_hand_the_rest_to_django(admin_api):
    from conftest import fast_route_call
    from swarm.core.fast_routes import FastRoutes
    from swarm.urls import FAST_ROUTES

    routes = FastRoutes(FAST_ROUTES, fallback=None)
    push_payload(admin_api)
    (drone, client), (_, other) = live_drones(2)
    rollout_id = start(admin_api, target={"names": [drone.name]}, min_healthy_time=5).json()["id"]
    rollout_advance(rollout_id=rollout_id)
    target = RolloutTarget.objects.get(rollout_id=rollout_id)
    sha256 = PayloadVersion.objects.get().sha256

    def call(token, body):
        return fast_route_call(routes, "POST", "/api/v1/payloads/agent/report", token=token,
                               body=json.dumps(body).encode())

    body = {"target_id": target.pk, "states": [{"state": "downloading"}, {"state": "succeeded", "reason": "ok"}],
            "current_sha256": sha256}
    answer = call(client.token, body)
    assert answer["status"] == 204 and not answer["django"]
    target.refresh_from_db()
    assert target.state == "verifying" and target.healthy_at is not None  # healthy; counts after 5 s
    assert list(PayloadEvent.objects.filter(target=target, kind="target").order_by("id")
                .values_list("to_state", flat=True)) == ["downloading", "verifying"]
    assert DronePayloadState.objects.get(drone=drone).reported_sha256 == sha256
    events = PayloadEvent.objects.count()
    assert call(client.token, body)["status"] == 204 and PayloadEvent.objects.count() == events  # idempotent
    assert call(other.token, body)["django"]  # another drone's target: the view says 404
    assert call(client.token, {**body, "states": [{"state": "exploded"}]})["django"]
    assert call("swm_nope_nope", body)["django"]


@pytest.mark.django_db(transaction=True)
def test_a_report_is_parsed_alike_on_both_paths_and_the_event_loop_says_when_it_answered(live_url, admin_api):
    """One parser (drones/payloads/protocol.py): the same 400 for a bad body, 415 for text/plain, 404 with a
    trailing slash; a plain report is answered on the event loop (`Swarm-Answered-By`)."""
    import httpx

    push_payload(admin_api)
    [(drone, client)] = live_drones(1)
    rollout_id = start(admin_api, target={"names": [drone.name]}).json()["id"]
    rollout_advance(rollout_id=rollout_id)
    target = RolloutTarget.objects.get(rollout_id=rollout_id)
    headers = {"Authorization": f"Bearer {client.token}"}
    path = "/api/v1/payloads/agent/report"
    for bad in ({"target_id": target.pk, "states": [{"state": "exploded"}]}, {"target_id": "1", "states": []},
                {"target_id": target.pk, "states": [{"state": "downloading", "reason": 5}]},
                {"target_id": target.pk, "states": [{"state": "downloading"}], "current_sha256": "ABC"}, [1]):
        live = httpx.post(f"{live_url}{path}", json=bad, headers=headers)
        view = client.post(path, bad, format="json")
        assert live.status_code == view.status_code == 400, (bad, live.status_code, view.status_code)
        assert live.json() == view.json() and "swarm-answered-by" not in live.headers, bad
    body = {"target_id": target.pk, "states": [{"state": "downloading"}]}
    plain = httpx.post(f"{live_url}{path}", content=json.dumps(body), headers={**headers, "Content-Type": "text/plain"})
    view = client.generic("POST", path, json.dumps(body), content_type="text/plain")
    assert plain.status_code == view.status_code == 415 and plain.json() == view.json()
    slash = httpx.post(f"{live_url}{path}/", json=body, headers=headers)
    assert slash.status_code == client.post(f"{path}/", body, format="json").status_code == 404
    assert not PayloadEvent.objects.filter(target=target, kind="target").exists(), "no refusal reported anything"
    answered = httpx.post(f"{live_url}{path}", json={**body, "unknown": "ignored"}, headers=headers)
    assert answered.status_code == 204 and answered.headers["swarm-answered-by"] == "event-loop"
    target.refresh_from_db()
    assert target.state == "downloading"
