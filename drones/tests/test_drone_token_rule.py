"""The drone token rule is one rule: SQL (`swarm_drone_token_check`) and Python (`drone_token_id`) agree, and a
revoked, expired or non-drone token is refused the same by every agent operation on both paths.

The SQL function is what the heartbeat statement, `swarm_agent_touch` (claims and log appends) and the deploy
report's target lock call on the event loop; the Python rule is what Django's views authenticate with. Over a
real server (fast routes in front of Django) and Django's test client: the same status and body, the event loop
never answers (`Swarm-Answered-By` absent), and nothing is written.
"""
from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from builds.models import Build, BuildAttempt
from builds.services import build_claim, build_set_running, build_trigger
from builds.tests.factories import make_drone, make_job
from drones.models import Drone
from drones.payloads.engine import rollout_advance
from drones.payloads.models import PayloadEvent, RolloutTarget
from drones.tests.payload_support import push_payload
from swarm.core.auth_limits import reset_failure_counters
from swarm.core.authentication import authenticate_token, drone_token_id
from swarm.core.models import ApiToken
from swarm.core.services import api_token_issue
from swarm.core.tokens import split_prefix, token_digest

ANSWERED_BY = "swarm-answered-by"


def _sql_rule(plaintext: str) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT swarm_drone_token_check(%s, %s, %s)",
                       [split_prefix(plaintext), token_digest(plaintext), timezone.now()])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_the_sql_and_python_rules_agree_on_every_kind_of_token():
    drone, client = make_drone()
    now = timezone.now()
    tokens = {"live": client.token}
    for name, fields in {
        "revoked": {"revoked_at": now},
        "expired": {"expires_at": now - timedelta(seconds=1)},
        "expiring later": {"expires_at": now + timedelta(hours=1)},
        "admin scope": {"scope": "admin"},
        "another subject type": {"subject_type": "execution"},
        "a signed subject id": {"subject_id": f"+{drone.pk}"},
        "a spaced subject id": {"subject_id": f" {drone.pk}"},
        "no subject id": {"subject_id": ""},
    }.items():
        issued = {"scope": "drone", "subject_type": "drone", "subject_id": str(drone.pk), "name": name}
        issued.update({key: value for key, value in fields.items() if key in issued})
        token, plaintext = api_token_issue(**issued)
        ApiToken.objects.filter(pk=token.pk).update(**{key: value for key, value in fields.items()
                                                       if key in ("revoked_at", "expires_at")})
        tokens[name] = plaintext
    answers = {name: (_sql_rule(plaintext), drone_token_id(authenticate_token(plaintext)))
               for name, plaintext in tokens.items()}
    assert {name: sql for name, (sql, _) in answers.items()} == {name: python for name, (_, python) in answers.items()}
    assert {name for name, (sql, _) in answers.items() if sql == drone.pk} == {"live", "expiring later"}


def _agent_calls(build_id: int, target_id: int):
    """(name, method, path, body, headers) of the heartbeat, claim, log append and deploy report."""
    return [
        ("heartbeat", "POST", "/api/v1/drones/heartbeat", {"metrics": {"load": 1}}, {}),
        ("claim", "POST", "/api/v1/builds/request", {"free_slots": 1}, {}),
        ("log append", "PATCH", f"/api/v1/builds/{build_id}/log", b"x", {"Content-Range": "0-0",
                                                                          "Content-Type": "text/plain"}),
        ("deploy report", "POST", "/api/v1/payloads/agent/report",
         {"target_id": target_id, "states": [{"state": "downloading"}]}, {}),
    ]


def _live(url, method, path, body, headers, token):
    headers = {"Authorization": f"Bearer {token}", **headers}
    if isinstance(body, bytes):
        return httpx.request(method, f"{url}{path}", content=body, headers=headers)
    return httpx.request(method, f"{url}{path}", json=body, headers=headers)


def _view(client, method, path, body, headers, token):
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()
             if name.lower() != "content-type"}
    if isinstance(body, bytes):
        return client.generic(method, path, body, content_type=headers["Content-Type"], **extra)
    return client.generic(method, path, json.dumps(body), content_type="application/json", **extra)


@pytest.mark.django_db(transaction=True)
def test_a_revoked_expired_or_non_drone_token_is_refused_alike_by_every_agent_call_on_both_paths(live_url,
                                                                                                  admin_api):
    build = build_trigger(job=make_job(), trigger="api")
    drone, client = make_drone()
    build_claim(drone=drone)
    build_set_running(build_id=build.pk, drone=drone)
    build_trigger(job=make_job(), trigger="api")  # what a claim would take
    Drone.objects.filter(pk=drone.pk).update(last_heartbeat_at=timezone.now(), status="online")
    assert push_payload(admin_api).status_code == 201
    rollout = admin_api.post("/api/v1/rollouts", {"payload_type": "toolchain", "version": "1.0.0",
                                                  "target": {"names": [drone.name]}, "min_healthy_time": 0},
                             format="json")
    assert rollout.status_code in (201, 202), rollout.content
    rollout_advance(rollout_id=rollout.json()["id"])
    target = RolloutTarget.objects.get(drone=drone)
    token = ApiToken.objects.get(prefix=split_prefix(client.token))
    _, admin_token = api_token_issue(scope="admin", name="not a drone")
    _, execution_token = api_token_issue(scope="drone", name="another subject", subject_type="execution",
                                         subject_id=str(drone.pk))
    heartbeat_before = Drone.objects.get(pk=drone.pk).last_heartbeat_at
    target_before = (target.state, target.state_changed_at)
    events_before = PayloadEvent.objects.count()

    def refusals(kind: str, plaintext: str) -> None:
        reset_failure_counters()  # eight refusals per kind: the failed-authentication limit must not answer instead
        for name, method, path, body, headers in _agent_calls(build.pk, target.pk):
            live = _live(live_url, method, path, body, headers, plaintext)
            view = _view(client, method, path, body, headers, plaintext)
            assert live.status_code == view.status_code and live.status_code in (401, 403), \
                (kind, name, live.status_code, view.status_code)
            assert live.json() == view.json(), (kind, name)
            assert ANSWERED_BY not in live.headers, f"the event loop answered a {kind} token's {name}"

    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    refusals("revoked", client.token)
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=None, expires_at=timezone.now() - timedelta(seconds=1))
    refusals("expired", client.token)
    refusals("admin", admin_token)
    refusals("execution-bound", execution_token)

    assert Drone.objects.get(pk=drone.pk).last_heartbeat_at == heartbeat_before
    assert Build.objects.filter(state="pending").count() == 1, "no refused token claimed"
    assert BuildAttempt.objects.get(build=build).log_size == 0
    target.refresh_from_db()
    assert (target.state, target.state_changed_at) == target_before and PayloadEvent.objects.count() == events_before
    # The same drone's token, live again, is answered by the event loop: the refusals were the token's.
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None)
    heartbeat = _live(live_url, "POST", "/api/v1/drones/heartbeat", {"metrics": {}}, {}, client.token)
    assert heartbeat.status_code == 200 and heartbeat.headers[ANSWERED_BY] == "event-loop"
