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
@pytest.mark.parametrize(("body", "field"), [
    (b'{"name": "\\ud800", "slug": "x"}', "name"),
    # In a key, it is named escaped: the answer could not be written out as UTF-8 otherwise (was a 500).
    (b'{"name": "x", "slug": "x", "a\\udbff": 1}', "a\\udbff"),
])
def test_a_lone_surrogate_is_a_400_naming_the_field(admin_api, body, field):
    response = admin_api.post("/api/v1/tenants", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["field"] == field


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


# --- write bodies: unknown fields, writes that take no body ----------------------------


@pytest.fixture
def engine_world(db):
    """A tenant with an active workflow version, an execution, a job with a finished build, and a drone."""
    from builds.services import build_cancel, build_trigger
    from builds.tests.factories import make_job
    from drones.tests.conftest import register_drone
    from workflows.models import Execution
    from workflows.tests.factories import make_tenant, make_version, make_workflow

    tenant = make_tenant("acme")
    workflow = make_workflow(tenant)
    old = make_version(workflow, "0.9.0", activate=True)
    version = make_version(workflow, "1.0.0", activate=True)
    execution = Execution.objects.create(tenant=tenant, workflow=workflow, version=version, runtime="process",
                                         timeout_sec=60)
    job = make_job(name="strict-job", tenant=tenant)
    build = build_cancel(build=build_trigger(job=job, trigger="api"), actor="test")
    drone, _ = register_drone("strict-drone")
    return {"tenant": tenant, "workflow": workflow, "old": old, "version": version, "execution": execution,
            "job": job, "build": build, "drone": drone}


WRITES_WITH_A_BODY = [
    ("post", "/api/v1/tenants", {"name": "Globex", "slug": "globex"}),
    ("post", "/api/v1/tenants/acme/workflows", {"slug": "resize"}),
    ("post", "/api/v1/workflows/{workflow}/executions", {"env": {"A": "b"}}),
    ("post", "/api/v1/jobs", {"name": "j2", "scm_url": "https://git.example.com/a/b", "build_config": {"steps": ["x"]}}),
    ("patch", "/api/v1/jobs/{job}", {"description": "x"}),
    ("post", "/api/v1/jobs/{job}/trigger", {"branch": "main"}),
    ("post", "/api/v1/drones/strict-drone/set-type", {"drone_type": "qemu"}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES_WITH_A_BODY, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("extra", [{"unknwn": 1}, {"id": 99}, {"padding": "x" * 1_000_000}], ids=["typo", "read-only",
                                                                                                   "10MB-ish"])
def test_engine_write_bodies_refuse_unknown_fields(admin_api, engine_world, method, path, body, extra):
    from django.db import connection

    path = path.format(workflow=engine_world["workflow"].pk, job=engine_world["job"].pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_xact_user_tables")
        before = cursor.fetchone()[0]
        response = getattr(admin_api, method)(path, {**body, **extra}, format="json")
        cursor.execute("SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_xact_user_tables")
        after = cursor.fetchone()[0]
    assert response.status_code == 400, (path, response.status_code, response.content[:300])
    answer = response.json()
    assert (answer["error"], answer["field"]) == ("unknown_field", next(iter(extra))), answer
    assert "this endpoint takes" in answer["detail"]
    assert after - before <= 1, "a refused write changed rows (only the token's last use may be touched)"


def _bundle_form(**fields):
    import io

    from conftest import make_bundle

    form = {"tenant": "acme", "workflow": "hello", "version": "2.0.0", **fields}
    form["bundle"] = io.BytesIO(make_bundle())
    form["bundle"].name = "bundle.tar.gz"
    return form


def test_bundle_uploads_refuse_unknown_form_fields_and_keep_nothing(admin_api, engine_world):
    from bundles.models import Bundle
    from workflows.models import WorkflowVersion

    bundles, versions = Bundle.objects.count(), WorkflowVersion.objects.count()
    response = admin_api.post("/api/v1/bundles", _bundle_form(activte="true"), format="multipart")
    assert response.status_code == 400, response.content
    assert (response.json()["error"], response.json()["field"]) == ("unknown_field", "activte")
    from conftest import make_bundle
    import hashlib

    data = make_bundle()
    put = admin_api.put(f"/api/v1/bundles/{hashlib.sha256(data).hexdigest()}?tenant=acme&workflow=hello"
                        f"&version=2.0.0&verison=3", data, content_type="application/gzip")
    assert put.status_code == 400 and put.json()["field"] == "verison", put.content
    assert (Bundle.objects.count(), WorkflowVersion.objects.count()) == (bundles, versions)
    assert admin_api.post("/api/v1/bundles", _bundle_form(), format="multipart").status_code == 201


NO_BODY_WRITES = [
    ("post", "/api/v1/workflows/{workflow}/versions/{old}/activate"),
    ("post", "/api/v1/workflows/{workflow}/rollback"),
    ("post", "/api/v1/executions/{execution}/cancel"),
    ("post", "/api/v1/builds/{build}/retry"),
    ("post", "/api/v1/builds/{build}/cancel"),
    ("delete", "/api/v1/jobs/{job}"),
    ("post", "/api/v1/drones/strict-drone/pause"),
    ("post", "/api/v1/drones/strict-drone/resume"),
    ("post", "/api/v1/drones/strict-drone/drain"),
    ("post", "/api/v1/drones/strict-drone/reset-escalation"),
    ("post", "/api/v1/drones/strict-drone/ping"),
    ("post", "/api/v1/ping/all"),
]


def _no_body_path(path: str, world) -> str:
    return path.format(workflow=world["workflow"].pk, old=world["old"].pk, execution=world["execution"].pk,
                       build=world["build"].pk, job=world["job"].pk)


@pytest.mark.parametrize(("body", "content_type", "status", "error"), [
    (b"garbage", "text/plain", 415, "unsupported_media_type"),
    (b"<x/>", "application/xml", 415, "unsupported_media_type"),
    (b"garbage", None, 415, "unsupported_media_type"),
    (b'{"force": true}', "application/json", 400, "unknown_field"),
    (b"force=1", "application/x-www-form-urlencoded", 400, "unknown_field"),
    (b"[1, 2]", "application/json", 400, "invalid"),
    (b"{", "application/json", 400, "parse_error"),
], ids=["text", "xml", "no-type", "json-field", "form-field", "json-list", "broken-json"])
def test_writes_that_take_no_body_refuse_one_and_change_nothing(admin_api, engine_world, body, content_type, status,
                                                                error):
    from builds.models import Build, Job
    from drones.models import Drone
    from workflows.models import Execution, WorkflowActivation

    def state():
        return (WorkflowActivation.objects.count(), Execution.objects.get().status,
                list(Build.objects.values_list("state", flat=True)), Job.objects.count(), Drone.objects.get().status)

    before = state()
    extra = {"content_type": content_type} if content_type else {"CONTENT_TYPE": ""}
    for method, path in NO_BODY_WRITES:
        response = admin_api.generic(method.upper(), _no_body_path(path, engine_world), body, **extra)
        assert response.status_code == status, (path, response.status_code, response.content[:300])
        assert response.json()["error"] == error, (path, response.json())
    assert state() == before


@pytest.mark.parametrize(("body", "content_type"), [(b"", None), (b"{}", "application/json"),
                                                    (b"", "application/json")], ids=["none", "empty-object", "empty"])
def test_writes_that_take_no_body_accept_none_or_an_empty_object(admin_api, engine_world, body, content_type):
    extra = {"content_type": content_type} if content_type else {}
    for method, path in NO_BODY_WRITES:
        response = admin_api.generic(method.upper(), _no_body_path(path, engine_world), body, **extra)
        # Past the body check: done, or a conflict of state (cancelling the build the retry left behind...).
        assert response.status_code < 300 or response.status_code == 409, (
            path, response.status_code, response.content[:300])


@pytest.mark.parametrize("body, field", [
    (b'{"drone_type": "\\ud800"}', "drone_type"),
    (b'{"drone_type": "qemu\\u0000"}', "drone_type"),
    (b'{"drone_type": {}}', "drone_type"),
])
def test_set_type_with_a_lone_surrogate_or_nul_is_a_400(admin_api, engine_world, body, field):
    from drones.models import Drone

    response = admin_api.post("/api/v1/drones/strict-drone/set-type", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert Drone.objects.get().drone_type_locked is False


@pytest.mark.parametrize("body, field", [
    (b'{"inputs": {"n": "a\\u0000b"}}', "inputs.n"),
    (b'{"inputs": {"\\udc00": 1}}', "inputs.\\udc00"),
    (b'{"inputs": [1]}', "inputs"),
    (b'{"inputs": "x"}', "inputs"),
    (b'{"env": {"A": "\\u0000"}}', "env.A"),
])
def test_execution_inputs_are_an_object_without_nul_or_surrogates(admin_api, engine_world, body, field):
    from workflows.models import Execution

    response = admin_api.post(f"/api/v1/workflows/{engine_world['workflow'].pk}/executions", body,
                              content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert Execution.objects.count() == 1
