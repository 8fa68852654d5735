"""Per-tenant quotas over the API: bundles stored (count and bytes), executions running, builds queued.

Over quota is a 429 `quota_exceeded` naming the quota, its value and the usage, and nothing is created;
a tenant's override wins over the setting; another tenant is not affected.
"""
from __future__ import annotations

import hashlib

import pytest

from builds.choices import BuildState
from bundles.models import Bundle
from builds.models import Build
from builds.tests.factories import make_job
from conftest import make_bundle, upload
from swarm.core.models import AuditLogEntry
from tenancy.services import tenant_set_quotas
from workflows.choices import ExecutionStatus
from workflows.models import Execution, Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db


def _assert_quota_refusal(response, *, quota: str, limit: int, usage: int) -> dict:
    assert response.status_code == 429, response.content
    body = response.json()
    assert (body["error"], body["quota"], body["limit"], body["usage"]) == ("quota_exceeded", quota, limit, usage)
    assert quota in body["detail"] and f"{usage} of {limit}" in body["detail"]
    return body


def test_bundle_count_quota_from_settings_refuses_the_next_version_and_keeps_nothing(engine_api, tenant, settings):
    settings.SWARM_QUOTA_BUNDLES = 2
    first = make_bundle()
    assert upload(engine_api, first, version="1.0.0").status_code == 201
    assert upload(engine_api, make_bundle(), version="1.0.1").status_code == 201
    refused = make_bundle()
    body = _assert_quota_refusal(upload(engine_api, refused, version="1.0.2"), quota="bundles", limit=2, usage=2)
    assert "SWARM_QUOTA_BUNDLES" in body["detail"]
    assert WorkflowVersion.objects.filter(workflow__tenant=tenant).count() == 2
    assert not Bundle.objects.filter(sha256=hashlib.sha256(refused).hexdigest()).exists()
    # The same bytes again are the existing version (deduplicated), not a new one: no quota needed.
    again = upload(engine_api, first, version="1.0.0")
    assert again.status_code == 200 and again.json()["deduplicated"] is True


def test_bundle_quota_override_on_the_tenant_wins_and_other_tenants_are_unaffected(
        engine_api, other_engine_api, tenant, other_tenant, settings, django_capture_on_commit_callbacks):
    settings.SWARM_QUOTA_BUNDLES = 100
    with django_capture_on_commit_callbacks(execute=True):
        tenant_set_quotas(tenant=tenant, quotas={"bundles": 1}, actor="test")
    assert upload(engine_api, make_bundle(), version="1.0.0").status_code == 201
    body = _assert_quota_refusal(upload(engine_api, make_bundle(), version="2.0.0"), quota="bundles", limit=1,
                                 usage=1)
    assert "Tenant.quota_bundles" in body["detail"]
    assert upload(other_engine_api, make_bundle(), tenant="globex", version="2.0.0").status_code == 201
    assert AuditLogEntry.objects.filter(action="tenant.quotas", tenant=tenant).exists()


def test_bundle_bytes_quota_counts_distinct_bundles(engine_api, tenant, settings):
    first = make_bundle({"main.py": "a" * 10})
    assert upload(engine_api, first, version="1.0.0").status_code == 201
    settings.SWARM_QUOTA_BUNDLE_BYTES = len(first) + 10
    _assert_quota_refusal(upload(engine_api, make_bundle({"main.py": "b" * 5000}), version="1.0.1"),
                          quota="bundle_bytes", limit=len(first) + 10, usage=len(first))
    # Bytes the tenant already holds cost nothing more: another workflow may use the same bundle.
    assert upload(engine_api, first, workflow="second", version="1.0.0").status_code == 201


def test_executions_running_quota_counts_unfinished_executions(engine_api, tenant, settings):
    assert upload(engine_api, make_bundle(), version="1.0.0").status_code == 201
    workflow = Workflow.objects.get(tenant=tenant)
    settings.SWARM_QUOTA_EXECUTIONS_RUNNING = 2
    spawn = f"/api/v1/workflows/{workflow.pk}/executions"
    assert engine_api.post(spawn, {}, format="json").status_code == 202
    assert engine_api.post(spawn, {}, format="json").status_code == 202
    _assert_quota_refusal(engine_api.post(spawn, {}, format="json"), quota="executions_running", limit=2, usage=2)
    assert Execution.objects.filter(tenant=tenant).count() == 2
    # One finishes: there is room again.
    Execution.objects.filter(pk=Execution.objects.first().pk).update(status=ExecutionStatus.SUCCEEDED)
    assert engine_api.post(spawn, {}, format="json").status_code == 202


def test_builds_queued_quota_counts_pending_builds_of_the_tenant(engine_api, tenant, other_tenant, settings):
    job = make_job(tenant=tenant)
    other_job = make_job(tenant=other_tenant)
    settings.SWARM_QUOTA_BUILDS_QUEUED = 1
    trigger = f"/api/v1/jobs/{job.pk}/trigger"
    assert engine_api.post(trigger, {}, format="json").status_code in (201, 202)
    _assert_quota_refusal(engine_api.post(trigger, {}, format="json"), quota="builds_queued", limit=1, usage=1)
    assert Build.objects.filter(job=job).count() == 1
    from builds.services import build_trigger

    assert build_trigger(job=other_job, trigger="api").state == BuildState.PENDING
    tenant_set_quotas(tenant=tenant, quotas={"builds_queued": 0}, actor="test")  # 0: unlimited
    assert engine_api.post(trigger, {}, format="json").status_code in (201, 202)


def test_quota_overrides_are_validated():
    from swarm.core.errors import ApiError
    from workflows.tests.factories import make_tenant

    tenant = make_tenant("acme")
    with pytest.raises(ApiError, match="Unknown quota"):
        tenant_set_quotas(tenant=tenant, quotas={"bundle": 3})
    with pytest.raises(ApiError, match="whole number"):
        tenant_set_quotas(tenant=tenant, quotas={"bundles": -1})
