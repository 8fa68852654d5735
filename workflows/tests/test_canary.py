"""Workflow canaries: a deterministic weighted split, judged on the candidate's failure rate, and `/active`."""
from __future__ import annotations

import pytest

from conftest import make_bundle, token_client, upload
from swarm.core.principals import Principal
from workflows.models import Execution, Workflow, WorkflowCanary
from workflows.services import execution_spawn, workflow_canary_evaluate
from workflows.services.canary import canary_bucket

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_versions(engine_api):
    first = upload(engine_api, make_bundle(), version="1.0.0").json()
    second = upload(engine_api, make_bundle(), version="1.1.0").json()
    workflow = Workflow.objects.get(pk=first["workflow_id"])
    return workflow, first, second


def start(client, workflow, version_id, **body):
    return client.post(f"/api/v1/workflows/{workflow.pk}/canary", {"version_id": version_id, **body}, format="json")


def spawn_many(workflow, count: int) -> list[Execution]:
    principal = Principal(scope="engine", tenant_id=workflow.tenant_id)
    return [execution_spawn(principal=principal, workflow=workflow) for _ in range(count)]


def test_split_is_weighted_deterministic_and_named_by_active(engine_api, two_versions):
    workflow, first, second = two_versions
    answer = start(engine_api, workflow, second["id"], weight=30, min_executions=5)
    assert answer.status_code == 201, answer.content
    canary = answer.json()
    assert (canary["version"], canary["primary_version"], canary["state"]) == ("1.1.0", "1.0.0", "active")
    assert start(engine_api, workflow, second["id"], weight=10).json()["error"] == "canary_exists"

    active = engine_api.get(f"/api/v1/workflows/{workflow.pk}/active").json()
    assert active["version"] == "1.0.0" and active["version_id"] == first["id"]  # the contract: the primary
    assert active["canary"]["version"] == "1.1.0" and active["canary"]["weight"] == 30

    executions = spawn_many(workflow, 60)
    on_candidate = [execution for execution in executions if execution.version_id == second["id"]]
    assert 8 <= len(on_candidate) <= 32  # about 30 % of 60
    for execution in executions:  # the same id always lands on the same side
        expected = second["id"] if canary_bucket(canary_id=canary["id"], execution_id=execution.pk) < 3000 \
            else first["id"]
        assert execution.version_id == expected
    spawned = execution.events.get(type="spawn_requested")
    assert spawned.data["canary"] == (execution.version_id == second["id"])


def test_failure_rate_over_the_threshold_reverts_the_split(engine_api, two_versions):
    workflow, first, second = two_versions
    start(engine_api, workflow, second["id"], weight=50, failure_rate_threshold=0.2, min_executions=4,
          auto_promote=True)
    candidate_runs = [e for e in spawn_many(workflow, 30) if e.version_id == second["id"]][:4]
    assert len(candidate_runs) == 4
    Execution.objects.filter(pk__in=[e.pk for e in candidate_runs[:3]]).update(status="succeeded")
    assert workflow_canary_evaluate(workflow_id=workflow.pk).state == "active"  # 3 finished < min_executions
    Execution.objects.filter(pk=candidate_runs[3].pk).update(status="failed")
    Execution.objects.filter(pk=candidate_runs[2].pk).update(status="timed_out")
    canary = workflow_canary_evaluate(workflow_id=workflow.pk)
    assert canary.state == "reverted" and "50%" in canary.reason
    assert workflow.versions.get(is_active=True).pk == first["id"]
    assert engine_api.get(f"/api/v1/workflows/{workflow.pk}/active").json()["canary"] is None
    assert all(e.version_id == first["id"] for e in spawn_many(workflow, 10))


def test_healthy_candidate_is_auto_promoted_and_manual_verbs(engine_api, two_versions):
    workflow, first, second = two_versions
    start(engine_api, workflow, second["id"], weight=50, failure_rate_threshold=0.5, min_executions=2,
          auto_promote=True)
    runs = [e for e in spawn_many(workflow, 20) if e.version_id == second["id"]][:2]
    Execution.objects.filter(pk__in=[e.pk for e in runs]).update(status="succeeded")
    assert workflow_canary_evaluate(workflow_id=workflow.pk).state == "promoted"
    assert workflow.versions.get(is_active=True).pk == second["id"]
    assert engine_api.post(f"/api/v1/workflows/{workflow.pk}/canary/promote").json()["error"] == "no_active_canary"
    # Back to 1.0.0 as candidate, then revert by hand.
    assert start(engine_api, workflow, first["id"], weight=10).status_code == 201
    assert engine_api.post(f"/api/v1/workflows/{workflow.pk}/canary/revert").json()["state"] == "reverted"
    assert WorkflowCanary.objects.filter(state="active").count() == 0


def test_scopes_another_tenant_is_404_and_read_is_403(engine_api, two_versions, other_engine_api, tenant):
    workflow, _, second = two_versions
    assert start(other_engine_api, workflow, second["id"], weight=10).status_code == 404
    assert start(token_client("read", tenant), workflow, second["id"], weight=10).status_code == 403
    assert other_engine_api.post(f"/api/v1/workflows/{workflow.pk}/canary/revert").status_code == 404
    assert token_client("read", tenant).post(f"/api/v1/workflows/{workflow.pk}/canary/promote").status_code == 403
    assert not WorkflowCanary.objects.exists()
