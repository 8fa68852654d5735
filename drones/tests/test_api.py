"""The drone API: registration and rotation, heartbeats, refusals, and the fleet seed API's permissions."""
import pytest
from rest_framework.test import APIClient

from drones.models import Drone, EscalationEvent, JoinToken
from drones.services import join_token_issue, join_token_revoke
from drones.tests.conftest import register_drone
from swarm.core.models import ApiToken

pytestmark = pytest.mark.django_db


def _register(client, join_token, name="d1", **fields):
    return client.post("/api/v1/drones/register", {"join_token": join_token, "name": name, **fields}, format="json")


def test_register_returns_token_and_intervals(anonymous_api, join_token):
    response = _register(anonymous_api, join_token, labels=["linux", "gpu"], drone_type="lxc", capacity=4)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["token"].startswith("swm_")
    assert body["heartbeat_interval"] == 1.0 and body["ping_interval"] == 1.0
    drone = Drone.objects.get(name="d1")
    assert (drone.labels, drone.drone_type, drone.capacity) == (["gpu", "linux"], "lxc", 4)
    token = ApiToken.objects.get(subject_type="drone", subject_id=str(drone.pk))
    assert token.scope == "drone"
    assert JoinToken.objects.get().provisioning_status == "registered"


def test_reregistering_rotates_the_drone_token(anonymous_api, join_token):
    first = _register(anonymous_api, join_token).json()["token"]
    second = _register(anonymous_api, join_token)
    assert second.status_code == 200
    assert second.json()["token"] != first
    old = APIClient()
    old.credentials(HTTP_AUTHORIZATION=f"Bearer {first}")
    assert old.post("/api/v1/drones/heartbeat", {}, format="json").status_code == 401
    new = APIClient()
    new.credentials(HTTP_AUTHORIZATION=f"Bearer {second.json()['token']}")
    assert new.post("/api/v1/drones/heartbeat", {}, format="json").status_code == 200
    assert Drone.objects.count() == 1


def test_revoked_expired_used_up_and_unknown_join_tokens_are_refused(anonymous_api):
    revoked, revoked_plain = join_token_issue(name="revoked")
    join_token_revoke(token=revoked)
    response = _register(anonymous_api, revoked_plain)
    assert response.status_code == 403
    assert response.json() == {"error": "token_revoked", "detail": "This join token was revoked.",
                               "field": "join_token"}
    _, once = join_token_issue(name="once", max_uses=1)
    assert _register(anonymous_api, once, name="a").status_code == 201
    assert _register(anonymous_api, once, name="b").json()["error"] == "token_used_up"
    assert _register(anonymous_api, "swj_deadbeef_forgedforgedforged").status_code == 401
    assert Drone.objects.filter(name="b").count() == 0
    assert JoinToken.objects.get(name="once").uses == 1


def test_bad_registration_input_names_the_field(anonymous_api, join_token):
    response = _register(anonymous_api, join_token, name="bad name!")
    assert response.status_code == 400 and response.json()["field"] == "name"
    response = _register(anonymous_api, join_token, drone_type="vmware")
    assert response.status_code == 400 and response.json()["field"] == "drone_type"
    assert not Drone.objects.exists()


def test_forged_and_wrong_scope_tokens_cannot_heartbeat(admin_api, anonymous_api, drone_api):
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Bearer swm_0badc0de_notarealtokenatallnotarealtoken")
    response = forged.post("/api/v1/drones/heartbeat", {}, format="json")
    assert response.status_code == 401 and response.json()["error"] == "authentication_failed"
    # A real token's prefix with a forged secret is refused too.
    forged.credentials(HTTP_AUTHORIZATION=f"Bearer {drone_api.token[:13]}forgedforgedforgedforgedforged12")
    assert forged.post("/api/v1/drones/heartbeat", {}, format="json").status_code == 401
    assert anonymous_api.post("/api/v1/drones/heartbeat", {}, format="json").status_code == 401
    response = admin_api.post("/api/v1/drones/heartbeat", {}, format="json")
    assert response.status_code == 403 and response.json()["error"] == "permission_denied"
    Drone.objects.filter(pk=drone_api.drone.pk).delete()
    assert drone_api.post("/api/v1/drones/heartbeat", {}, format="json").status_code == 404


def test_heartbeat_records_metrics_and_answers_the_action(drone_api, admin_api):
    response = drone_api.post("/api/v1/drones/heartbeat", {"metrics": {"cpu_percent": 12.5}, "running_build_ids": []},
                              format="json")
    assert response.status_code == 200
    assert response.json()["action"] == "run"
    drone = Drone.objects.get(pk=drone_api.drone.pk)
    assert drone.metrics == {"cpu_percent": 12.5} and drone.last_heartbeat_at is not None
    for verb, action in (("pause", "pause"), ("drain", "drain"), ("resume", "run")):
        assert admin_api.post(f"/api/v1/drones/{drone.name}/{verb}").status_code == 200
        assert drone_api.post("/api/v1/drones/heartbeat", {}, format="json").json()["action"] == action
    bad = drone_api.post("/api/v1/drones/heartbeat", {"metrics": [1, 2]}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "metrics"
    huge = drone_api.post("/api/v1/drones/heartbeat", {"metrics": {"x": "y" * 20000}}, format="json")
    assert huge.status_code == 400 and huge.json()["field"] == "metrics"
    assert drone_api.post("/api/v1/drones/heartbeat", [1], format="json").status_code == 400
    assert Drone.objects.get(pk=drone.pk).metrics == {}  # refused heartbeats changed nothing


def test_heartbeat_is_one_query(drone_api, django_assert_num_queries):
    drone_api.post("/api/v1/drones/heartbeat", {"metrics": {}}, format="json")  # the first one also updates provisioning
    with django_assert_num_queries(1):  # token check and drone update in one UPDATE … RETURNING
        assert drone_api.post("/api/v1/drones/heartbeat", {"metrics": {}}, format="json").status_code == 200


def test_seed_api_reads_for_read_tokens_writes_for_admin_only(read_api, engine_api, admin_api, anonymous_api):
    drone, _ = register_drone("seed-1")
    for path in ("/api/v1/drones", "/api/v1/ping", "/api/v1/escalation", "/api/v1/drones/seed-1"):
        assert read_api.get(path).status_code == 200, path
        assert anonymous_api.get(path).status_code == 401, path
    assert read_api.get("/api/v1/drones").json()["results"][0]["name"] == "seed-1"
    for verb in ("pause", "resume", "drain", "reset-escalation", "ping"):
        assert read_api.post(f"/api/v1/drones/seed-1/{verb}").status_code == 403
        assert engine_api.post(f"/api/v1/drones/seed-1/{verb}").status_code == 403
    assert read_api.post("/api/v1/ping/all").status_code == 403
    assert admin_api.post("/api/v1/drones/nope/pause").status_code == 404
    response = admin_api.post("/api/v1/drones/seed-1/set-type", {"drone_type": "qemu"}, format="json")
    assert response.status_code == 200 and response.json()["drone_type"] == "qemu"
    bad = admin_api.post("/api/v1/drones/seed-1/set-type", {"drone_type": "vmware"}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "drone_type"
    # An operator's type sticks when the agent re-registers with its own detection.
    from drones.services import drone_register, join_token_issue as issue

    drone_register(join_token=issue(name="again")[1], name="seed-1", drone_type="bare-metal")
    assert Drone.objects.get(name="seed-1").drone_type == "qemu"
    Drone.objects.filter(pk=drone.pk).update(escalation_level=3, escalation_attempts=2)
    response = admin_api.post("/api/v1/drones/seed-1/reset-escalation")
    assert response.status_code == 200 and response.json()["escalation_level"] == 0
    assert EscalationEvent.objects.get(drone=drone).action == "reset"
    assert admin_api.get("/api/v1/escalation?drone=seed-1").json()["results"][0]["action"] == "reset"
    assert admin_api.post("/api/v1/ping/all").json() == {"pinged": ["seed-1"]}


def test_bootstrap_script_requires_a_usable_join_token(anonymous_api, join_token):
    assert anonymous_api.get("/api/v1/provision/bootstrap").status_code == 401
    assert anonymous_api.get("/api/v1/provision/bootstrap?token=swj_00000000_nope").status_code == 401
    response = anonymous_api.get(f"/api/v1/provision/bootstrap?token={join_token}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/x-shellscript")
    assert join_token in response.content.decode()
    assert JoinToken.objects.get().provisioning_status == "script_fetched"
    package = anonymous_api.get(f"/api/v1/provision/agent.tar.gz?token={join_token}")
    assert package.status_code == 200 and package.content[:2] == b"\x1f\x8b"


def test_openapi_schema_builds():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert "/api/v1/drones/heartbeat" in schema["paths"]
    assert "/api/v1/drones/{name}/ping" in schema["paths"]
