"""Executions API and metadata service over the test client: tokens, transitions, isolation, secrets."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import make_bundle, token_client, upload
from swarm.core.errors import Conflict
from swarm.core.services import api_token_issue
from workflows import services
from workflows.models import Execution, ExecutionEvent, TenantSecret, Workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def workflow(admin_api, tenant):
    response = upload(admin_api, make_bundle(), tenant="acme", workflow="hello")
    assert response.status_code == 201, response.content
    return Workflow.objects.get(tenant=tenant, slug="hello")


@pytest.fixture
def secret(workflow):
    return services.tenant_secret_set(tenant=workflow.tenant, name="API_KEY", value="hunter2-value",
                                                workflows=[workflow])


def _spawn(client, workflow, **body):
    return client.post(f"/api/v1/workflows/{workflow.pk}/executions", body, format="json")


def _metadata_client(execution, *, expires_in=timedelta(hours=1), **headers):
    _, plaintext = api_token_issue(scope="execution", tenant=execution.tenant, subject_type="execution",
                                   subject_id=str(execution.pk), expires_at=timezone.now() + expires_in)
    client = token_client("read")  # an unrelated bearer token must not matter
    client.credentials(HTTP_X_SWARM_METADATA_TOKEN=plaintext, **headers)
    return client


def test_spawn_returns_202_with_a_pending_execution_and_its_url(engine_api, workflow):
    response = _spawn(engine_api, workflow, env={"WHO": "world"}, inputs={"n": 3})
    assert response.status_code == 202, response.content
    body = response.json()
    execution = Execution.objects.get(pk=body["id"])
    assert body["status"] == "pending" and body["url"].endswith(f"/api/v1/executions/{execution.pk}")
    assert response["Location"] == body["url"]
    assert execution.version == workflow.versions.get(is_active=True)
    assert execution.env == {"WHO": "world"} and execution.inputs == {"n": 3}
    assert [e.type for e in execution.events.all()] == ["spawn_requested"]


def test_spawn_without_an_active_version_is_409(engine_api, workflow):
    workflow.versions.update(is_active=False)
    response = _spawn(engine_api, workflow)
    assert response.status_code == 409 and response.json()["error"] == "no_active_version"
    assert not Execution.objects.exists()


@pytest.mark.parametrize("body, field", [({"env": {"1BAD": "x"}}, "env"), ({"env": "nope"}, "env"),
                                         ({"inputs": [1, 2]}, "inputs")])
def test_spawn_refuses_bad_input_and_changes_nothing(engine_api, workflow, body, field):
    response = _spawn(engine_api, workflow, **body)
    assert response.status_code == 400, response.content
    assert response.json()["field"].startswith(field)
    assert not Execution.objects.exists()


def test_read_tokens_cannot_spawn_or_cancel(read_api, workflow, engine_api):
    assert _spawn(read_api, workflow).status_code == 403
    execution_id = _spawn(engine_api, workflow).json()["id"]
    assert read_api.get(f"/api/v1/executions/{execution_id}").status_code == 200
    assert read_api.post(f"/api/v1/executions/{execution_id}/cancel").status_code == 403


def test_tenant_isolation_of_executions_events_and_spawn(engine_api, other_engine_api, workflow):
    execution_id = _spawn(engine_api, workflow).json()["id"]
    for path in (f"/api/v1/executions/{execution_id}", f"/api/v1/executions/{execution_id}/events",
                 f"/api/v1/workflows/{workflow.pk}/executions"):
        response = other_engine_api.get(path)
        assert response.status_code == 404, (path, response.content)
    assert other_engine_api.post(f"/api/v1/executions/{execution_id}/cancel").status_code == 404
    assert _spawn(other_engine_api, workflow).status_code == 404
    assert Execution.objects.count() == 1 and Execution.objects.get().status == "pending"


def test_metadata_returns_the_boot_plan_with_secrets_and_records_it(engine_api, workflow, secret):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow, env={"WHO": "x"}).json()["id"])
    response = _metadata_client(execution).get("/api/v1/metadata")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["execution_id"] == execution.pk and body["secrets"] == {"API_KEY": "hunter2-value"}
    assert body["bundle_hash"] == execution.version.bundle.sha256 and body["bundle_url"].startswith("http")
    assert body["env"] == {"WHO": "x"} and body["runtime"] == "python311" and body["entrypoint"] == "main.py"
    assert set(body) >= {"memory_mb", "timeout_sec"}
    assert response["Cache-Control"] == "no-store"
    execution.refresh_from_db()
    assert execution.status == "booting"
    served = execution.events.get(type="metadata_served")
    assert served.data["secrets"] == ["API_KEY"] and "hunter2" not in str(served.data)
    # No other endpoint ever returns the value.
    for path in (f"/api/v1/executions/{execution.pk}", f"/api/v1/executions/{execution.pk}/events",
                 f"/api/v1/workflows/{workflow.pk}/executions"):
        assert "hunter2-value" not in engine_api.get(path).content.decode()


def test_metadata_refuses_forwarded_requests(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    client = _metadata_client(execution, HTTP_X_FORWARDED_FOR="10.0.0.1")
    response = client.get("/api/v1/metadata")
    assert response.status_code == 403 and response.json()["error"] == "forwarded_request_refused"
    assert client.post("/api/v1/metadata/events", {"events": [{"type": "started"}]},
                       format="json").status_code == 403
    assert not execution.events.filter(type="metadata_served").exists()


def test_metadata_refuses_expired_missing_and_non_execution_tokens(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    expired = _metadata_client(execution, expires_in=timedelta(seconds=-1)).get("/api/v1/metadata")
    assert expired.status_code == 401 and expired.json()["error"] == "authentication_failed"
    assert engine_api.get("/api/v1/metadata").status_code == 401  # a bearer token is not a metadata token
    engine_as_metadata = token_client("read")
    engine_as_metadata.credentials(HTTP_X_SWARM_METADATA_TOKEN=engine_api.token)
    assert engine_as_metadata.get("/api/v1/metadata").status_code == 401


def test_a_token_of_one_execution_cannot_touch_another(engine_api, workflow):
    first = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    second = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    client = _metadata_client(first)
    response = client.post(f"/api/v1/executions/{second.pk}/events", {"events": [{"type": "started"}]},
                           format="json")
    assert response.status_code == 404
    assert second.events.count() == 1
    # ... and it is no bearer token for the rest of the API.
    bearer = token_client("read")
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {client._credentials['HTTP_X_SWARM_METADATA_TOKEN']}")
    assert bearer.get(f"/api/v1/executions/{first.pk}").status_code == 403


def test_reported_events_drive_status_and_mask_secrets(engine_api, workflow, secret):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    client = _metadata_client(execution)
    events = [
        {"type": "bundle_cache_miss", "data": {"reason": "absent"}},
        {"type": "started", "message": "started"},
        {"type": "output", "stream": "stdout", "message": "key=hunter2-value!"},
    ]
    response = client.post(f"/api/v1/executions/{execution.pk}/events", {"events": events}, format="json")
    assert response.status_code == 200, response.content
    execution.refresh_from_db()
    assert execution.status == "running" and execution.started_at is not None
    assert execution.deadline_at == execution.started_at + timedelta(seconds=execution.timeout_sec)
    line = execution.events.get(type="output")
    assert line.message == "key=********!" and line.stream == "stdout"
    assert client.post("/api/v1/metadata/events", {"events": [{"type": "exited", "data": {"exit_code": 3}}]},
                       format="json").status_code == 200
    execution.refresh_from_db()
    assert execution.status == "failed" and execution.exit_code == 3 and execution.finished_at
    # The execution ended: its token is dead, nothing more is accepted.
    late = client.post("/api/v1/metadata/events", {"events": [{"type": "started"}]}, format="json")
    assert late.status_code == 401
    assert client.get("/api/v1/metadata").status_code == 401
    execution.refresh_from_db()
    assert execution.status == "failed"
    assert list(execution.events.values_list("seq", flat=True)) == list(range(1, execution.last_seq + 1))


@pytest.mark.parametrize("event, error, field", [
    ({"type": "spawn_requested"}, "invalid_event_type", "events[0].type"),
    # The hostile-input probe: an unhashable type was a 500 ("unhashable type: 'dict'").
    ({"type": {}}, "invalid_event_type", "events[0].type"),
    ({"type": ["started"]}, "invalid_event_type", "events[0].type"),
    ({"type": "exited", "data": {}}, "invalid", "events[0].data.exit_code"),
    ({"type": "exited", "data": {"exit_code": "3"}}, "invalid", "events[0].data.exit_code"),
    ({"type": "exited", "data": {"exit_code": True}}, "invalid", "events[0].data.exit_code"),
    # exit_code is an IntegerField: 2^31 was a 500 ("integer out of range").
    ({"type": "exited", "data": {"exit_code": 2**31}}, "invalid", "events[0].data.exit_code"),
    ({"type": "exited", "data": {"exit_code": -(2**31) - 1}}, "invalid", "events[0].data.exit_code"),
    ({"type": "output", "stream": "stdweird", "message": "x"}, "invalid_choice", "events[0].stream"),
    # `message: {}` and `data: []` were accepted (and stored as "" and {}).
    ({"type": "output", "stream": "stdout", "message": {}}, "invalid", "events[0].message"),
    ({"type": "output", "stream": "stdout", "message": 5}, "invalid", "events[0].message"),
    ({"type": "started", "data": []}, "not_a_dict", "events[0].data"),
    ({"type": "started", "data": None}, "null", "events[0].data"),
    ({"type": "started", "seq": 7}, "unknown_field", "events[0].seq"),
])
def test_bad_reports_are_refused_and_change_nothing(engine_api, workflow, event, error, field):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    response = _metadata_client(execution).post("/api/v1/metadata/events", {"events": [event]}, format="json")
    assert response.status_code == 400, response.content
    assert (response.json()["error"], response.json()["field"]) == (error, field)
    assert execution.events.count() == 1


@pytest.mark.parametrize("body, error, field", [
    ({"events": []}, "empty", "events"),
    ({"events": [{"type": "started"}] * 1001}, "max_length", "events"),
    ({"events": [{"type": "started"}], "extra": 1}, "unknown_field", "extra"),
    ({"events": [{"type": "started"}, {"type": "output", "message": "\u0000"}]}, "invalid_text",
     "events[1].message"),
    ({"events": [{"type": "started", "data": {"k": "\ud800"}}]}, "invalid_text", "events[0].data.k"),
    ({"events": [{"type": "started"}, {"type": "nope"}]}, "invalid_event_type", "events[1].type"),
    ({}, "missing_field", "events"),
])
def test_bad_report_bodies_name_the_field_and_change_nothing(engine_api, workflow, body, error, field):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    raw = json.dumps(body)  # a NUL and a lone surrogate go as the JSON escapes \u0000 and \ud800
    response = _metadata_client(execution).post(f"/api/v1/executions/{execution.pk}/events", raw,
                                                content_type="application/json")
    assert response.status_code == 400, response.content
    assert (response.json()["error"], response.json()["field"]) == (error, field)
    assert execution.events.count() == 1


def test_reported_output_keeps_its_blanks_and_int32_exit_codes_are_stored(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    response = _metadata_client(execution).post("/api/v1/metadata/events", {"events": [
        {"type": "started"}, {"type": "output", "stream": "stdout", "message": "  indented\t"},
        {"type": "exited", "data": {"exit_code": 2**31 - 1}}]}, format="json")
    assert response.status_code == 200, response.content
    execution.refresh_from_db()
    assert execution.events.get(type="output").message == "  indented\t"
    assert execution.exit_code == 2**31 - 1 and execution.status == "failed"


def test_no_transition_out_of_a_terminal_status(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    services.execution_report(execution=execution, events=[{"type": "exited", "data": {"exit_code": 0}}])
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    with pytest.raises(Conflict):
        services.execution_report(execution=execution, events=[{"type": "started"}])
    assert services.execution_fail(execution_id=execution.pk, reason="late").status == "succeeded"


def test_cancel_marks_cancelled_revokes_the_token_and_is_409_twice(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    metadata = _metadata_client(execution)
    response = engine_api.post(f"/api/v1/executions/{execution.pk}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert engine_api.post(f"/api/v1/executions/{execution.pk}/cancel").json()["error"] == "execution_finished"
    assert metadata.get("/api/v1/metadata").status_code == 401
    assert [e.type for e in execution.events.all()] == ["spawn_requested", "cancel_requested"]


def test_events_tail_with_after(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    services.execution_report(execution=execution, events=[
        {"type": "started"}, {"type": "output", "stream": "stdout", "message": "one"}])
    page = engine_api.get(f"/api/v1/executions/{execution.pk}/events?after=1").json()
    assert [e["seq"] for e in page["events"]] == [2, 3] and page["next_after"] == 3
    assert page["finished"] is False and page["status"] == "running"
    assert engine_api.get(f"/api/v1/executions/{execution.pk}/events?after=3").json()["events"] == []
    bad = engine_api.get(f"/api/v1/executions/{execution.pk}/events?after=x")
    assert bad.status_code == 400 and bad.json()["field"] == "after"


def test_events_are_append_only_in_the_database(engine_api, workflow):
    from django.db import DatabaseError, transaction

    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    with pytest.raises(DatabaseError), transaction.atomic():
        ExecutionEvent.objects.filter(execution=execution).update(message="rewritten")


def test_overdue_executions_time_out(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    Execution.objects.filter(pk=execution.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert services.executions_reap() == {"timed_out": 1, "lost": 0, "drone_lost": 0, "queued_offered": 0}
    execution.refresh_from_db()
    assert execution.status == "timed_out" and execution.events.filter(type="timed_out").exists()
    assert services.executions_reap() == {"timed_out": 0, "lost": 0, "drone_lost": 0, "queued_offered": 0}


def test_secrets_are_encrypted_at_rest_and_rotate(settings, workflow, secret):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    from swarm.core.secret_box import development_key

    stored = TenantSecret.objects.get(pk=secret.pk).ciphertext
    assert "hunter2" not in stored
    new_key = Fernet.generate_key().decode()
    old_key = Fernet.generate_key().decode()
    settings.SWARM_SECRETS_KEYS = [old_key]
    # Written with the development key derived from SWARM_SECRET_KEY, not old_key; that key stays a
    # decrypt-only legacy key, so it takes another secret key too for no key to fit.
    original_secret_key, settings.SECRET_KEY = settings.SECRET_KEY, "another-secret-key"
    with pytest.raises(ValueError):
        services.secrets_for_workflow(workflow=workflow)
    settings.SECRET_KEY = original_secret_key
    settings.SWARM_SECRETS_KEYS = []
    services.tenant_secret_set(tenant=workflow.tenant, name="API_KEY", value="hunter2-value")
    derived = TenantSecret.objects.get(pk=secret.pk).ciphertext

    settings.SWARM_SECRETS_KEYS = [new_key, development_key().decode()]
    call_command("rotate_secrets")
    rotated = TenantSecret.objects.get(pk=secret.pk).ciphertext
    assert rotated != derived
    assert Fernet(new_key.encode()).decrypt(rotated.encode()) == b"hunter2-value"  # under the new key itself
    settings.SWARM_SECRETS_KEYS = [new_key]  # the old key is gone: still readable
    assert services.secrets_for_workflow(workflow=workflow) == {"API_KEY": "hunter2-value"}


def test_secret_names_and_tenants_are_checked(workflow, other_tenant):
    from swarm.core.errors import ApiError

    with pytest.raises(ApiError):
        services.tenant_secret_set(tenant=workflow.tenant, name="bad name", value="x")
    with pytest.raises(ApiError):
        services.tenant_secret_set(tenant=other_tenant, name="OK", value="x", workflows=[workflow])
    assert not TenantSecret.objects.exists()


def test_openapi_schema_describes_the_execution_endpoints(admin_api):
    response = admin_api.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/v1/workflows/{workflow_id}/executions", "/api/v1/executions/{execution_id}",
                 "/api/v1/executions/{execution_id}/events", "/api/v1/executions/{execution_id}/cancel",
                 "/api/v1/metadata", "/api/v1/metadata/events"):
        assert path in paths, path
    assert "202" in paths["/api/v1/workflows/{workflow_id}/executions"]["post"]["responses"]


def test_an_execution_whose_supervisor_vanished_is_failed_by_the_reaper(engine_api, workflow, tmp_path):
    import socket

    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    # A supervisor pid that is not running on this host (killed outright, so it never reported).
    Execution.objects.filter(pk=execution.pk).update(
        status="running", runtime_state={"host": socket.gethostname(), "supervisor_pid": 2**22 + 17,
                                         "supervisor_start_time": "1", "root": str(tmp_path), "sandbox": "bwrap"})
    assert services.executions_reap() == {"timed_out": 0, "lost": 1, "drone_lost": 0, "queued_offered": 0}
    execution.refresh_from_db()
    assert execution.status == "failed"
    assert "gone" in execution.events.get(type="error").message
    # Another host's execution is left alone: this worker cannot tell.
    other = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    Execution.objects.filter(pk=other.pk).update(status="running",
                                                 runtime_state={"host": "elsewhere", "supervisor_pid": 1})
    assert services.executions_reap()["lost"] == 0


def test_metadata_delivers_only_secrets_attached_to_this_workflow(engine_api, workflow, other_tenant, admin_api):
    other_workflow = Workflow.objects.get(pk=upload(admin_api, make_bundle(), tenant="globex",
                                                    workflow="hello").json()["workflow_id"])
    services.tenant_secret_set(tenant=other_tenant, name="API_KEY", value="globex-value",
                                         workflows=[other_workflow])
    services.tenant_secret_set(tenant=workflow.tenant, name="UNATTACHED", value="not-for-hello")
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    assert _metadata_client(execution).get("/api/v1/metadata").json()["secrets"] == {}


def test_metadata_for_a_secret_no_key_decrypts_is_a_clear_error_and_serves_nothing(engine_api, workflow, secret):
    from cryptography.fernet import Fernet

    lost_key = Fernet(Fernet.generate_key())
    TenantSecret.objects.filter(pk=secret.pk).update(ciphertext=lost_key.encrypt(b"hunter2-value").decode())
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    response = _metadata_client(execution).get("/api/v1/metadata")
    assert response.status_code == 500 and response.json()["error"] == "secret_undecryptable"
    assert f"workflows.TenantSecret {secret.pk} ciphertext" in response.json()["detail"]
    assert "hunter2" not in response.content.decode()
    assert not execution.events.filter(type="metadata_served").exists()
