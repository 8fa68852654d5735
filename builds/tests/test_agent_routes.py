"""The agent routes answer the same on the event loop and through Django, and the event loop says when it answered.

Over a real uvicorn server (fast routes in front of Django) and Django's test
client (Django alone): the same URL table, the same parsers, the same
refusals. The server marks its event-loop answers (`Swarm-Answered-By`,
on in tests through SWARM_FAST_PATH_HEADER), so each test knows which path
answered.
"""
import json

import httpx
import pytest

from builds import claim_groups
from builds.models import Build, BuildAttempt
from builds.services import build_claim, build_set_running, build_trigger
from builds.tests.factories import make_drone, make_job
from conftest import fast_route_call
from swarm.core.fast_routes import FastRoutes
from swarm.urls import FAST_ROUTES

pytestmark = pytest.mark.django_db(transaction=True)

ANSWERED_BY = "swarm-answered-by"


def running_build():
    build = build_trigger(job=make_job(), trigger="api")
    drone, client = make_drone()
    build_claim(drone=drone)
    build_set_running(build_id=build.pk, drone=drone)
    return build, client


def agent_requests(build_id: int):
    """(method, path, JSON body or raw bytes, extra headers) of every agent route."""
    return [
        ("POST", "/api/v1/builds/request", {"free_slots": 1}, {}),
        ("POST", "/api/v1/drones/heartbeat", {"metrics": {}}, {}),
        ("PUT", f"/api/v1/builds/{build_id}/state", {"state": "running"}, {}),
        ("PATCH", f"/api/v1/builds/{build_id}/log", b"x", {"Content-Range": "0-0", "Content-Type": "text/plain"}),
        ("POST", "/api/v1/payloads/agent/report", {"target_id": 1, "states": [{"state": "downloading"}]}, {}),
        ("POST", f"/api/v1/builds/{build_id}/artifacts", {"path": "a", "size": 1, "sha256": "0" * 64}, {}),
    ]


def _send_live(url: str, method: str, path: str, body, headers: dict, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **headers}
    if isinstance(body, bytes):
        return httpx.request(method, f"{url}{path}", content=body, headers=headers)
    return httpx.request(method, f"{url}{path}", json=body, headers=headers)


def _send_django(client, method: str, path: str, body, headers: dict):
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()
             if name.lower() != "content-type"}
    if isinstance(body, bytes):
        return client.generic(method, path, body, content_type=headers.get("Content-Type", "text/plain"), **extra)
    return client.generic(method, path, json.dumps(body), content_type="application/json", **extra)


def test_a_trailing_slash_on_every_agent_route_is_a_404_on_both_paths_and_claims_nothing(live_url):
    build, client = running_build()
    build_trigger(job=make_job(), trigger="api")
    for method, path, body, headers in agent_requests(build.pk):
        live = _send_live(live_url, method, path + "/", body, headers, client.token)
        view = _send_django(client, method, path + "/", body, headers)
        assert live.status_code == view.status_code == 404, (method, path, live.status_code, view.status_code)
        assert live.json() == view.json() and ANSWERED_BY not in live.headers
    assert Build.objects.filter(state="pending").count() == 1, "the slash never claimed"
    assert BuildAttempt.objects.get(build=build).log_size == 0
    routes = FastRoutes(FAST_ROUTES, fallback=None)
    for method, path, _, _ in agent_requests(build.pk):
        assert routes.route_for({"type": "http", "method": method, "path": path + "/"}) is None


def test_text_plain_bodies_are_415_on_both_paths_and_change_nothing(live_url):
    build_trigger(job=make_job(), trigger="api")
    drone, client = make_drone()
    before = drone.last_heartbeat_at
    for path, body in (("/api/v1/builds/request", b'{"free_slots": 1}'), ("/api/v1/drones/heartbeat", b"{}")):
        headers = {"Content-Type": "text/plain"}
        live = _send_live(live_url, "POST", path, body, headers, client.token)
        view = _send_django(client, "POST", path, body, headers)
        assert live.status_code == view.status_code == 415, (path, live.status_code, view.status_code)
        assert live.json() == view.json() and live.json()["error"] == "unsupported_media_type"
        assert ANSWERED_BY not in live.headers, "Django's view answers a body that is not JSON"
    assert Build.objects.filter(state="pending").count() == 1
    drone.refresh_from_db()
    assert drone.last_heartbeat_at == before


def test_the_event_loop_answers_plain_agent_requests_and_says_so(live_url):
    build_trigger(job=make_job(), trigger="api")
    _, client = make_drone()
    claimed = _send_live(live_url, "POST", "/api/v1/builds/request", {"free_slots": 1}, {}, client.token)
    assert claimed.status_code == 201 and claimed.headers[ANSWERED_BY] == "event-loop"
    heartbeat = _send_live(live_url, "POST", "/api/v1/drones/heartbeat", {"metrics": {}}, {}, client.token)
    assert heartbeat.status_code == 200 and heartbeat.headers[ANSWERED_BY] == "event-loop"
    started = _send_live(live_url, "PUT", f"/api/v1/builds/{claimed.json()['id']}/state", {"state": "running"}, {},
                         client.token)
    assert started.status_code == 200 and ANSWERED_BY not in started.headers, "no fast route: Django answers"
    refused = _send_live(live_url, "POST", "/api/v1/builds/request", {"free_slots": "many"}, {}, client.token)
    view = _send_django(client, "POST", "/api/v1/builds/request", {"free_slots": "many"}, {})
    assert refused.status_code == view.status_code == 400 and refused.json() == view.json()
    assert ANSWERED_BY not in refused.headers, "a refusal before any write is the view's"
    foreign = httpx.post(f"{live_url}/api/v1/builds/request", json={"free_slots": 1},
                         headers={"Authorization": f"Bearer {client.token}", "Host": "evil.example"})
    assert foreign.status_code == 400 and ANSWERED_BY not in foreign.headers, "Django refuses the Host"
    assert Build.objects.filter(state="pending").count() == 0


def test_a_failure_after_the_claim_group_committed_is_a_500_and_no_second_build_is_claimed(monkeypatch):
    first = build_trigger(job=make_job(), trigger="api")
    build_trigger(job=make_job(), trigger="api")
    _, client = make_drone(capacity=2)
    call = claim_groups.ClaimGroups._call

    async def commits_then_fails(group):
        await call(group)  # the group's transaction is committed here
        raise ConnectionResetError("the connection broke after the commit")

    monkeypatch.setattr(claim_groups.ClaimGroups, "_call", staticmethod(commits_then_fails))
    routes = FastRoutes(FAST_ROUTES, fallback=None)
    answer = fast_route_call(routes, "POST", "/api/v1/builds/request", token=client.token,
                             body=json.dumps({"free_slots": 1}).encode())
    assert not answer["django"], "after the claim the view must never answer (it would claim a second build)"
    assert answer["status"] == 500 and json.loads(answer["body"])["error"] == "server_error"
    assert list(Build.objects.filter(state="assigned").values_list("pk", flat=True)) == [first.pk]
    assert Build.objects.filter(state="pending").count() == 1
