"""Choosing a runtime at spawn, the supervisor's runtime report, idempotent boot reports, /readyz runtimes.

Over the test client; nothing boots here (test_microvm_live.py and
test_restart_live.py run the real thing).
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import token_client
from swarm.core.services import api_token_issue
from workflows.models import Execution, Workflow
from workflows.services.runtime_reports import runtime_token_issue
from workflows.tests.test_executions_api import _spawn, workflow  # noqa: F401 - the same fixture and helper

pytestmark = pytest.mark.django_db


def test_an_unknown_runtime_is_a_400_naming_the_known_ones(engine_api, workflow):
    response = _spawn(engine_api, workflow, runtime="firecracker")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid" and body["field"] == "runtime"
    assert "microvm" in body["detail"] and "process" in body["detail"]
    assert not Execution.objects.exists()


def test_the_requested_runtime_is_used_and_recorded(engine_api, workflow):
    response = _spawn(engine_api, workflow, runtime="process")
    assert response.status_code == 202 and response.json()["runtime"] == "process"
    assert Execution.objects.get().events.get().data["runtime"] == "process"


def test_microvm_without_an_image_is_a_422_naming_the_reason(engine_api, workflow, settings, tmp_path):
    settings.SWARM_MICROVM_IMAGE_DIR = str(tmp_path / "no-image-here")
    response = _spawn(engine_api, workflow, runtime="microvm")
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["error"] == "runtime_unavailable" and "make microvm-image" in body["detail"]
    assert not Execution.objects.exists()


def test_more_memory_than_the_host_has_is_a_422_at_spawn_and_nothing_starts(engine_api, workflow, microvm_image,
                                                                           settings):
    from workflows.runtimes.microvm import host_memory_mb

    settings.SWARM_MICROVM_IMAGE_DIR = str(microvm_image.directory.parent)
    Workflow.objects.filter(pk=workflow.pk).update(memory_mb=host_memory_mb() + 1)
    response = _spawn(engine_api, workflow, runtime="microvm")
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["error"] == "insufficient_memory" and body["field"] == "memory_mb"
    assert f"{host_memory_mb()} MiB" in body["detail"]
    assert not Execution.objects.exists()


def _runtime_client(execution) -> tuple:
    plaintext = runtime_token_issue(execution=execution)
    client = token_client("read")
    client.credentials(HTTP_X_SWARM_RUNTIME_TOKEN=plaintext)
    return client, plaintext


def test_a_runtime_report_on_a_live_execution_fails_it_with_the_reason_once(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    Execution.objects.filter(pk=execution.pk).update(status="running")
    client, _ = _runtime_client(execution)
    report = {"type": "runtime_exited", "data": {"code": "vm_exited", "reason": "the VM (QEMU) was killed by SIGKILL",
                                                 "returncode": -9, "console_tail": "x" * 20000}}
    response = client.post(f"/api/v1/executions/{execution.pk}/runtime-events", report, format="json")
    assert response.status_code == 200, response.content
    execution.refresh_from_db()
    assert execution.status == "failed"
    exited, error = execution.events.order_by("seq")[1:]
    assert exited.type == "runtime_exited" and len(exited.data["console_tail"]) == 8192
    assert error.type == "error" and error.data["code"] == "vm_exited" and "SIGKILL" in error.message
    # One use: the token died with the report.
    again = client.post(f"/api/v1/executions/{execution.pk}/runtime-events", report, format="json")
    assert again.status_code == 401


def test_a_runtime_report_after_the_boot_reported_its_end_only_adds_the_event(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    Execution.objects.filter(pk=execution.pk).update(status="succeeded", exit_code=0)
    client, _ = _runtime_client(execution)
    response = client.post(f"/api/v1/executions/{execution.pk}/runtime-events",
                           {"type": "runtime_exited", "data": {"reason": "the VM (QEMU) exited with code 0"}},
                           format="json")
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert list(execution.events.values_list("type", flat=True)) == ["spawn_requested", "runtime_exited"]


def test_runtime_and_metadata_tokens_do_not_stand_in_for_each_other(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    runtime_client, runtime_token = _runtime_client(execution)
    _, metadata_token = api_token_issue(scope="execution", tenant=execution.tenant, subject_type="execution",
                                        subject_id=str(execution.pk), expires_at=timezone.now() + timedelta(hours=1))
    as_metadata = token_client("read")
    as_metadata.credentials(HTTP_X_SWARM_METADATA_TOKEN=runtime_token)
    assert as_metadata.get("/api/v1/metadata").status_code == 401  # the supervisor never reads secrets
    as_runtime = token_client("read")
    as_runtime.credentials(HTTP_X_SWARM_RUNTIME_TOKEN=metadata_token)
    report = {"type": "runtime_exited", "data": {"reason": "x"}}
    assert as_runtime.post(f"/api/v1/executions/{execution.pk}/runtime-events", report,
                           format="json").status_code == 401
    other = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    assert runtime_client.post(f"/api/v1/executions/{other.pk}/runtime-events", report,
                               format="json").status_code == 404
    bad = runtime_client.post(f"/api/v1/executions/{execution.pk}/runtime-events", {"type": "exited"},
                              format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "type"


def test_a_retried_boot_report_is_stored_once(engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    _, token = api_token_issue(scope="execution", tenant=execution.tenant, subject_type="execution",
                               subject_id=str(execution.pk), expires_at=timezone.now() + timedelta(hours=1))
    client = token_client("read")
    client.credentials(HTTP_X_SWARM_METADATA_TOKEN=token)
    batch = [{"type": "started"}, {"type": "output", "stream": "stdout", "message": "one"}]
    for _ in range(2):  # the first answer was lost: the boot sends the same batch again
        assert client.post("/api/v1/metadata/events", {"events": batch, "first": 0}, format="json").status_code == 200
    overlapping = [{"type": "output", "stream": "stdout", "message": "one"},
                   {"type": "output", "stream": "stdout", "message": "two"}]
    assert client.post("/api/v1/metadata/events", {"events": overlapping, "first": 1},
                       format="json").status_code == 200
    messages = [e.message for e in execution.events.filter(type="output").order_by("seq")]
    assert messages == ["one", "two"]
    assert client.post("/api/v1/metadata/events", {"events": batch, "first": -1},
                       format="json").json()["field"] == "first"


def test_readyz_names_each_runtime_and_the_microvm_accelerator(client, microvm_image, settings):
    settings.SWARM_MICROVM_IMAGE_DIR = str(microvm_image.directory.parent)
    settings.SWARM_MICROVM_ACCELERATOR = "tcg"
    body = client.get("/readyz").json()
    assert body["runtimes"]["process"] == {"available": True}
    assert body["runtimes"]["microvm"]["available"] is True
    assert body["runtimes"]["microvm"]["accelerator"] == "tcg"
    assert body["runtimes"]["microvm"]["image"] == microvm_image.key
    settings.SWARM_MICROVM_IMAGE_DIR = "/nonexistent"
    missing = client.get("/readyz").json()["runtimes"]["microvm"]
    assert missing["available"] is False and "no microVM image" in missing["reason"]


def test_the_admin_execution_page_shows_the_accelerator_and_the_console_tail(admin_client, engine_api, workflow):
    execution = Execution.objects.get(pk=_spawn(engine_api, workflow).json()["id"])
    Execution.objects.filter(pk=execution.pk).update(runtime_state={"sandbox": "microvm", "accelerator": "tcg"})
    client, _ = _runtime_client(execution)
    client.post(f"/api/v1/executions/{execution.pk}/runtime-events",
                {"type": "runtime_exited", "data": {"reason": "the VM (QEMU) exited with code 0",
                                                    "console_tail": "swarm-guest: init\n<kernel says hi>"}},
                format="json")
    page = admin_client.get(f"/admin/workflows/execution/{execution.pk}/change/").content.decode()
    assert "<td>tcg</td>" in page or ">tcg<" in page
    assert 'id="execution-console"' in page and "&lt;kernel says hi&gt;" in page
