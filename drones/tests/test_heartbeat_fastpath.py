"""The heartbeat on the event loop (drones/fastpath.py) and its hand-off to Django's view."""
import json

import httpx
import pytest

from drones.models import Drone, JoinToken
from drones.tests.conftest import register_drone
from conftest import fast_route_call
from swarm.core.fast_routes import FastRoutes
from swarm.urls import FAST_ROUTES

METRICS = {"cpu_percent": 12.5, "load_1": 0.3}


@pytest.fixture
def routes():
    return FastRoutes(FAST_ROUTES, fallback=None)


def call(routes, *, token, body):
    return fast_route_call(routes, "POST", "/api/v1/drones/heartbeat", token=token, body=body)


@pytest.mark.django_db(transaction=True)
def test_plain_heartbeat_is_answered_on_the_event_loop_and_recorded(routes):
    drone, token = register_drone("fast-1")
    answer = call(routes, token=token, body=json.dumps({"metrics": METRICS}).encode())
    assert not answer["django"]
    assert answer["status"] == 200
    body = json.loads(answer["body"])
    assert set(body) == {"action", "status", "heartbeat_interval", "ping_interval"}
    assert (body["action"], body["status"]) == ("run", "online")
    drone.refresh_from_db()
    assert drone.metrics == METRICS
    assert drone.last_heartbeat_at is not None and drone.first_heartbeat_at == drone.last_heartbeat_at
    assert JoinToken.objects.get(name="join-fast-1").provisioning_status == "heartbeat"


@pytest.mark.django_db(transaction=True)
def test_fast_answer_carries_the_operator_hold(routes):
    drone, token = register_drone("fast-2")
    Drone.objects.filter(pk=drone.pk).update(status="paused")
    answer = call(routes, token=token, body=b'{"metrics": {}}')
    assert not answer["django"] and json.loads(answer["body"])["action"] == "pause"
    Drone.objects.filter(pk=drone.pk).update(status="online", stop_requested=True)
    assert json.loads(call(routes, token=token, body=b"{}")["body"])["action"] == "stop"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("token, body", [
    ("swarm_abcdefgh_not-a-real-token", b'{"metrics": {}}'),  # unknown token: Django says 401
    (None, b'{"metrics": {}}'),  # no token
    ("DRONE", b'{"metrics": [1, 2]}'),  # metrics not an object: Django says 400
    ("DRONE", b"not json"),
    ("DRONE", json.dumps({"metrics": {"blob": "x" * 20_000}}).encode()),  # too large
    ("DRONE", b'{"metrics": {}, "inventory": ["gpu"]}'),  # a hook without an async variant must see it
])
def test_anything_but_a_plain_heartbeat_goes_to_django_with_its_body(routes, token, body, monkeypatch):
    from drones.services import heartbeat as heartbeat_hooks

    for registry in ("_hooks", "_async_hooks", "_fields"):
        monkeypatch.setattr(heartbeat_hooks, registry, dict(getattr(heartbeat_hooks, registry)))
    heartbeat_hooks.register_heartbeat_hook(name="inventory", hook=lambda drone_id, body: None, fields=("inventory",))
    drone, real_token = register_drone("fast-3")
    before = Drone.objects.get(pk=drone.pk).last_heartbeat_at
    answer = call(routes, token=real_token if token == "DRONE" else token, body=body)
    assert answer["django"] and answer["status"] == 299
    assert answer["django_body"] == body  # replayed whole, nothing lost to the fast path
    assert Drone.objects.get(pk=drone.pk).last_heartbeat_at == before


@pytest.mark.django_db(transaction=True)
def test_live_server_fast_and_django_answers_agree(live_url):
    """Over real HTTP: the fast answer equals the view's, and refusals are Django's JSON errors."""
    from django.test import Client

    drone, token = register_drone("fast-live")
    headers = {"Authorization": f"Bearer {token}"}
    fast = httpx.post(f"{live_url}/api/v1/drones/heartbeat", json={"metrics": METRICS}, headers=headers)
    assert fast.status_code == 200
    view = Client().post("/api/v1/drones/heartbeat", data={"metrics": METRICS}, content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {token}")
    assert view.status_code == 200 and fast.json() == view.json()
    bad = httpx.post(f"{live_url}/api/v1/drones/heartbeat", json={"metrics": "high"}, headers=headers)
    assert bad.status_code == 400 and bad.json() == {"error": "invalid", "detail": "metrics must be a JSON object.",
                                                     "field": "metrics"}
    forged = httpx.post(f"{live_url}/api/v1/drones/heartbeat", json={}, headers={"Authorization": "Bearer x_y_z"})
    assert forged.status_code == 401 and forged.json()["error"] == "authentication_failed"
    assert Drone.objects.get(pk=drone.pk).metrics == METRICS


@pytest.mark.django_db(transaction=True)
def test_fast_route_answers_are_counted_for_metrics(routes):
    from swarm.core.fast_routes import FAST_ROUTE_REQUESTS

    _, token = register_drone("fast-metrics")
    counted = lambda answered_by: FAST_ROUTE_REQUESTS.labels("drones.fastpath.heartbeat", answered_by)._value.get()  # noqa: E731
    fast_before, django_before = counted("fast"), counted("django")
    call(routes, token=token, body=b'{"metrics": {}}')
    call(routes, token=token, body=b'{"metrics": []}')
    assert (counted("fast"), counted("django")) == (fast_before + 1, django_before + 1)
