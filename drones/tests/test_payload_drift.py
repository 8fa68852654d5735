"""payload_hashes in heartbeats (view and fast path), drift flags and events, the gauge, reconcile, and scopes."""
from __future__ import annotations

import json

import pytest

from conftest import fast_route_call, token_client
from drones.payloads.drift import drift_check
from drones.payloads.models import DronePayloadState, PayloadEvent, PayloadType, PayloadVersion, Rollout
from drones.tests.payload_support import live_drones, push_payload
from swarm.core.fast_routes import FastRoutes
from swarm.urls import FAST_ROUTES

OTHER = "f" * 64


def heartbeat(client, hashes):
    return client.post("/api/v1/drones/heartbeat", {"metrics": {}, "payload_hashes": hashes}, format="json")


@pytest.mark.django_db
def test_desired_vs_reported_drift_event_gauge_and_clearing(admin_api):
    version = PayloadVersion.objects.get(pk=push_payload(admin_api).json()["id"])
    (drone, client), = live_drones(1)
    DronePayloadState.objects.create(drone=drone, payload_type=version.payload_type, desired_version=version)
    assert heartbeat(client, {"toolchain": version.sha256}).status_code == 200
    assert drift_check().changed == 0
    heartbeat(client, {"toolchain": OTHER})  # someone edited an installed file
    report = drift_check()
    assert report.drifted == [(drone.pk, version.payload_type_id)]
    state = DronePayloadState.objects.get(drone=drone)
    assert state.drifted and state.reported_sha256 == OTHER and "desired toolchain=1.0.0" in state.drift_detail
    assert PayloadEvent.objects.filter(kind="drift", drone=drone).count() == 1
    assert drift_check().changed == 0  # one event per change, not per check
    metrics = admin_api.get("/metrics").content.decode()
    assert 'swarm_drone_payload_drift{payload_type="toolchain"} 1.0' in metrics
    listed = admin_api.get("/api/v1/payload-drift").json()
    rows = [(row["drone"], row["type"], row["drifted"]) for row in listed["results"]]
    assert rows == [(drone.name, "toolchain", True)]
    heartbeat(client, {"toolchain": version.sha256})
    assert drift_check().cleared == [(drone.pk, version.payload_type_id)]
    assert PayloadEvent.objects.filter(kind="drift_cleared", drone=drone).count() == 1


@pytest.mark.django_db
def test_a_hash_for_a_type_never_given_is_drift_not_a_crash(admin_api):
    PayloadType.objects.create(name="binhost")
    (drone, client), = live_drones(1)
    answer = heartbeat(client, {"binhost": OTHER, "no-such-type": OTHER, "toolchain": "not-a-hash", "x": 5})
    assert answer.status_code == 200
    drift_check()
    state = DronePayloadState.objects.get(drone=drone)
    assert state.drifted and state.desired_version is None
    assert "never given" in state.drift_detail


@pytest.mark.django_db
def test_a_rollout_in_progress_explains_a_difference(admin_api):
    version = PayloadVersion.objects.get(pk=push_payload(admin_api).json()["id"])
    (drone, client), = live_drones(1)
    DronePayloadState.objects.create(drone=drone, payload_type=version.payload_type, desired_version=version)
    admin_api.post("/api/v1/rollouts", {"payload_type": "toolchain", "version": "1.0.0", "target": {"all": True}},
                   format="json")
    heartbeat(client, {"toolchain": OTHER})
    assert drift_check().drifted == []


@pytest.mark.django_db
def test_auto_reconcile_starts_a_rollout_back_to_the_desired_version(admin_api, settings):
    version = PayloadVersion.objects.get(pk=push_payload(admin_api).json()["id"])
    PayloadType.objects.filter(pk=version.payload_type_id).update(auto_reconcile=True)
    (drone, client), = live_drones(1)
    DronePayloadState.objects.create(drone=drone, payload_type=version.payload_type, desired_version=version)
    heartbeat(client, {"toolchain": OTHER})
    report = drift_check()
    assert len(report.reconcile_rollouts) == 1
    rollout = Rollout.objects.get(pk=report.reconcile_rollouts[0])
    assert rollout.is_reconcile and rollout.payload_version == version and rollout.target_names == [drone.name]
    # Backoff: a second drift of the same drone and type soon after does not start another one.
    Rollout.objects.filter(pk=rollout.pk).update(state="succeeded")
    DronePayloadState.objects.filter(drone=drone).update(drifted=False)
    assert drift_check().reconcile_rollouts == []


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_fast_path_stores_hashes_without_django(admin_api):
    push_payload(admin_api)
    (drone, client), = live_drones(1)
    routes = FastRoutes(FAST_ROUTES, fallback=None)
    body = json.dumps({"metrics": {}, "payload_hashes": {"toolchain": OTHER}}).encode()
    answer = fast_route_call(routes, "POST", "/api/v1/drones/heartbeat", token=client.token, body=body)
    assert answer["status"] == 200 and not answer["django"]
    assert DronePayloadState.objects.get(drone=drone).reported_sha256 == OTHER


WRITES = [
    ("post", "/api/v1/payload-types", {"name": "x"}),
    ("patch", "/api/v1/payload-types/toolchain", {"keep_releases": 4}),
    ("post", "/api/v1/releases", {"payloads": {"toolchain": "1.0.0"}}),
    ("post", "/api/v1/rollouts", {"payload_type": "toolchain", "version": "1.0.0", "target": {"all": True}}),
    ("post", "/api/v1/rollouts/{rollout}/pause", None),
    ("post", "/api/v1/rollouts/{rollout}/resume", None),
    ("post", "/api/v1/rollouts/{rollout}/promote", None),
    ("post", "/api/v1/rollouts/{rollout}/abort", None),
    ("post", "/api/v1/rollouts/{rollout}/revert", None),
    ("post", "/api/v1/payload-drift/reconcile", {}),
]


@pytest.mark.django_db
@pytest.mark.parametrize("scope, bound", [("read", True), ("engine", True), ("drone", False)])
def test_writes_need_admin_or_an_unbound_engine_token(admin_api, tenant, scope, bound):
    push_payload(admin_api)
    live_drones(1)
    rollout_id = admin_api.post("/api/v1/rollouts", {"payload_type": "toolchain", "version": "1.0.0",
                                                      "target": {"all": True}}, format="json").json()["id"]
    if scope == "drone":
        from rest_framework.test import APIClient

        from drones.tests.conftest import register_drone

        _, drone_token = register_drone("scoped")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {drone_token}")
    else:
        client = token_client(scope, tenant if bound else None)
    before = (Rollout.objects.count(), PayloadEvent.objects.count(), Rollout.objects.get(pk=rollout_id).state)
    for method, path, body in WRITES:
        answer = getattr(client, method)(path.format(rollout=rollout_id), body, format="json")
        assert answer.status_code == 403, (path, answer.content)
    assert (Rollout.objects.count(), PayloadEvent.objects.count(), Rollout.objects.get(pk=rollout_id).state) == before


@pytest.mark.django_db
def test_upload_needs_a_fleet_write_token_and_reads_are_open_to_read_tokens(admin_api, tenant):
    assert push_payload(token_client("read", tenant)).status_code == 403
    assert push_payload(token_client("engine", tenant)).status_code == 403
    assert push_payload(token_client("engine", None)).status_code == 201
    reader = token_client("read", tenant)
    for path in ("/api/v1/payload-types", "/api/v1/payload-versions", "/api/v1/releases", "/api/v1/rollouts",
                 "/api/v1/payload-drift"):
        assert reader.get(path).status_code == 200, path
