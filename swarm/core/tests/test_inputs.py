"""The strict input layer: hostile JSON, text and integers are a 4xx naming what is wrong, on every endpoint.

Each reproduction of the hostile-input probe that the layer itself answers is
here; findings that belong to one endpoint's serializer are tested beside it.
"""
from __future__ import annotations

import json
import re

import pytest
from rest_framework.test import APIClient

from conftest import token_client
from swarm.core.errors import ApiError
from swarm.core.inputs import MAX_INT64, check_json_value, json_loads, parse_int

DEEP = ("[" * 1000 + "]" * 1000).encode()


# --- the helpers --------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP, b'{"a":' * 70 + b"1" + b"}" * 70])
def test_deep_json_is_refused_as_too_deep(body):
    with pytest.raises(ApiError) as refused:
        json_loads(body)
    assert refused.value.code == "too_deep"


def test_json_within_the_depth_limit_loads():
    assert json_loads(b'{"a":' * 60 + b"1" + b"}" * 60)["a"]["a"]["a"]


@pytest.mark.parametrize(("body", "field"), [
    (b'{"metrics": {"cpu": "a\\u0000b"}}', "metrics.cpu"),
    (b'{"events": [{"message": "ok"}, {"message": "\\ud800"}]}', "events[1].message"),
    (b'{"params": {"k\\u0000": "v"}}', "params.k\x00"),
    (b'"\\udfff"', None),
    # A lone surrogate in a key is named escaped: the answer could not be written out as UTF-8 otherwise.
    (b'{"params": {"k\\ud800": "v"}}', "params.k\\ud800"),
])
def test_nul_and_lone_surrogates_are_refused_with_their_path(body, field):
    with pytest.raises(ApiError) as refused:
        json_loads(body)
    assert refused.value.code == "invalid_text"
    assert refused.value.field == field


@pytest.mark.parametrize("body", [b"NaN", b'{"a": Infinity}', b"\xff\xfe", b'{"a": 1', b""])
def test_what_is_not_json_is_a_parse_error(body):
    with pytest.raises(ApiError) as refused:
        json_loads(body)
    assert refused.value.code == "parse_error"


def test_a_valid_surrogate_pair_is_text():
    assert json_loads(b'"\\ud83d\\ude00"') == "\U0001F600"


def test_the_depth_walk_is_iterative():
    value = current = []
    for _ in range(100_000):
        current.append([])
        current = current[0]
    with pytest.raises(ApiError):
        check_json_value(value)


@pytest.mark.parametrize("raw", ["²", "¹", "٣", "1_000", " 1", "0x10", "1e3", "+1", "", "-1", "9" * 25])
def test_integers_are_ascii_digits_only(raw):
    with pytest.raises(ApiError) as refused:
        parse_int(raw, field="offset")
    assert refused.value.field == "offset"


def test_integers_are_range_checked():
    assert parse_int("42", field="n") == 42
    assert parse_int(str(MAX_INT64), field="n") == MAX_INT64
    with pytest.raises(ApiError):
        parse_int(str(MAX_INT64 + 1), field="n")
    with pytest.raises(ApiError):
        parse_int("0", field="n", minimum=1)
    assert parse_int("-5", field="n", minimum=-10) == -5


# --- every endpoint -----------------------------------------------------------


def _operations(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, operations in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method, operation in operations.items():
            yield concrete, method, operation


@pytest.mark.django_db
@pytest.mark.parametrize("scope", ["admin", "drone"])
def test_deep_json_is_a_4xx_on_every_json_endpoint(scope):
    if scope == "drone":
        from drones.tests.conftest import register_drone

        _, token = register_drone("hostile-drone")
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    else:
        api = token_client("admin")
    tried = []
    for path, method, operation in _operations(api):
        if "application/json" not in operation.get("requestBody", {}).get("content", {}):
            continue
        response = getattr(api, method)(path, data=DEEP, content_type="application/json")
        tried.append(f"{method.upper()} {path}")
        assert response.status_code < 500, (method, path, response.status_code, response.content[:300])
        assert response["Content-Type"].startswith("application/json"), (method, path)
    assert len(tried) >= 12, tried


@pytest.mark.django_db
def test_deep_json_is_refused_by_the_parser_naming_the_rule(admin_api):
    response = admin_api.post("/api/v1/tenants", data=DEEP, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "too_deep"


@pytest.mark.django_db
def test_nul_in_stored_json_is_a_400_naming_the_field(admin_api):
    body = json.dumps({"name": "Acme", "slug": "acme\u0000"})
    response = admin_api.post("/api/v1/tenants", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_text", "field": "slug",
                               "detail": "slug: contains a NUL character (\\u0000)."}


@pytest.mark.django_db
def test_a_lone_surrogate_is_a_400_naming_the_field(admin_api):
    response = admin_api.post("/api/v1/tenants", data=b'{"name": "\\ud800", "slug": "x"}',
                              content_type="application/json")
    assert response.status_code == 400
    assert response.json()["field"] == "name"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/jobs/%00", "/api/v1/jobs/a%00b", "/api/v1/drones/%00",
                                  "/api/v1/bundles/%00", "/api/v1/builds?drone=%00", "/api/v1/escalation?drone=%00",
                                  "/api/v1/builds?job=a%00", "/api/v1/drones?x%00=1", "/api/v1/jobs/a%1bb"])
def test_nul_and_control_characters_in_path_or_query_are_a_400(admin_api, path):
    response = admin_api.get(path)
    assert response.status_code == 400, (path, response.status_code, response.content[:200])
    assert response.json()["error"] in {"invalid_path", "invalid"}


@pytest.mark.django_db
def test_nul_in_a_post_path_changes_nothing(admin_api):
    response = admin_api.post("/api/v1/drones/%00/pause")
    assert response.status_code == 400
    assert response.json()["field"] == "path"


@pytest.mark.django_db
def test_odd_digits_in_limit_and_offset_are_a_400_on_every_list(admin_api):
    tried = 0
    for path, method, operation in _operations(admin_api):
        names = {parameter["name"] for parameter in operation.get("parameters", [])}
        if method != "get" or "limit" not in names:
            continue
        for parameter in ("limit", "offset"):
            response = admin_api.get(path, {parameter: "²"})
            assert response.status_code in (400, 404), (path, parameter, response.status_code)
            if response.status_code == 400:
                assert response.json()["field"] == parameter, (path, response.json())
            tried += 1
    assert tried >= 20


@pytest.mark.django_db
def test_odd_digits_in_ids_and_parameters_are_4xx(admin_api):
    from builds.tests.factories import make_job
    from builds.services import build_trigger

    job = make_job(name="odd-digits")
    build = build_trigger(job=job, trigger="api")
    assert admin_api.get("/api/v1/jobs/¹").status_code == 404
    assert admin_api.get("/api/v1/builds?job=²").status_code == 200
    for query in ({"offset": "²"}, {"attempt": "²"}, {"attempt": "99999999999"}):
        response = admin_api.get(f"/api/v1/builds/{build.pk}/log", query)
        assert response.status_code == 400, (query, response.content)
        assert response.json()["field"] == next(iter(query))


@pytest.mark.django_db
def test_odd_digits_in_the_build_attempt_header_are_a_400():
    from builds.services import build_claim, build_set_running, build_trigger
    from builds.tests.factories import make_drone, make_job

    drone, api = make_drone(labels=[])
    build = build_trigger(job=make_job(name="attempt-header"), trigger="api")
    assert build_claim(drone=drone) is not None
    build_set_running(build_id=build.pk, drone=drone)
    response = api.generic("PATCH", f"/api/v1/builds/{build.pk}/log", b"hello", content_type="text/plain",
                           HTTP_CONTENT_RANGE="0-4", HTTP_BUILD_ATTEMPT="²")
    assert response.status_code == 400
    assert response.json()["field"] == "Build-Attempt"


@pytest.mark.django_db
def test_odd_digits_in_execution_events_after_are_a_400(admin_api):
    response = admin_api.get("/api/v1/executions/1/events", {"after": "²"})
    assert response.status_code in (400, 404)
    from workflows.models import Execution
    from workflows.tests.factories import make_tenant, make_version, make_workflow

    workflow = make_workflow(make_tenant("odd"))
    version = make_version(workflow, "1.0.0", activate=True)
    execution = Execution.objects.create(tenant=workflow.tenant, workflow=workflow, version=version,
                                         runtime="process", timeout_sec=60)
    response = admin_api.get(f"/api/v1/executions/{execution.pk}/events", {"after": "²"})
    assert response.status_code == 400
    assert response.json()["field"] == "after"


def test_write_serializers_refuse_unknown_and_read_only_fields():
    from rest_framework import serializers

    from swarm.core.serializers import RejectUnknownFields

    class Trigger(RejectUnknownFields, serializers.Serializer):
        id = serializers.IntegerField(read_only=True)
        branch = serializers.CharField(required=False)

    assert Trigger(data={"branch": "dev"}).is_valid()
    for body, field in (({"branh": "dev"}, "branh"), ({"id": 3}, "id")):
        checked = Trigger(data=body)
        assert not checked.is_valid()
        assert checked.errors[field][0].code == "unknown_field"
        assert "takes branch" in str(checked.errors[field][0])


@pytest.mark.django_db
def test_a_lone_surrogate_in_a_key_is_a_400_not_a_500_writing_the_answer(admin_api):
    response = admin_api.post("/api/v1/tenants", data=b'{"name": "x", "slug": "x", "a\\udbff": 1}',
                              content_type="application/json")
    assert response.status_code == 400
    assert response.json()["field"] == "a\\udbff"
