"""The tenant scope: one rule for every tenant-owned model, and every such model uses it."""
from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from builds.models import Artifact, Build, BuildAttempt, BuildEvent, BuildLogChunk, Job
from builds.services import build_claim, build_trigger
from builds.tests.factories import make_drone, make_job
from bundles.models import Bundle
from swarm.core.principals import Principal
from tenancy.models import Tenant
from tenancy.scope import TenantScopedQuerySet, path_is_multi_valued, tenant_path
from workflows.models import (
    ActiveWorkflowVersion,
    Execution,
    ExecutionEvent,
    TenantSecret,
    Workflow,
    WorkflowActivation,
    WorkflowVersion,
)
from workflows.services import tenant_secret_set
from workflows.tests.factories import make_bundle_row, make_tenant, make_version, make_workflow

pytestmark = pytest.mark.django_db

#: Models with a foreign key to a tenant that are not tenant-owned resources, and why.
NOT_SCOPED = {
    "core.ApiToken": "credentials: issued and revoked by admins, never listed through the API",
    "core.AuditLogEntry": "the admin's audit trail; `tenant` records whose object it was, for filtering",
}


def _reaches_tenant(model, seen=()) -> bool:
    """Whether a chain of forward foreign keys leads from `model` to Tenant."""
    for field in model._meta.get_fields():
        if field.many_to_one and field.concrete:
            target = field.related_model
            if target is Tenant or (target not in seen and _reaches_tenant(target, (*seen, model))):
                return True
    return False


def test_every_model_that_leads_to_a_tenant_declares_its_path_and_uses_the_scope():
    missing, wrong = [], []
    for model in apps.get_models():
        label = model._meta.label
        if label in NOT_SCOPED or not (_reaches_tenant(model) or hasattr(model, "tenant_path")):
            continue
        if not getattr(model, "tenant_path", None):
            missing.append(label)
            continue
        if not isinstance(model._default_manager.all(), TenantScopedQuerySet):
            wrong.append(f"{label}: default manager is not a TenantScopedQuerySet")
        path = tenant_path(model)
        related = model
        for name in path.split("__"):
            related = related if name == "pk" else related._meta.get_field(name).related_model
        if related is not Tenant:
            wrong.append(f"{label}: {path} leads to {related._meta.label}, not tenancy.Tenant")
    assert not missing, f"tenant-owned models without a tenant_path (or list them in NOT_SCOPED): {missing}"
    assert not wrong, wrong


def test_the_declared_paths():
    assert {model._meta.label: tenant_path(model) for model in (
        Tenant, Workflow, WorkflowVersion, WorkflowActivation, ActiveWorkflowVersion, Execution, ExecutionEvent,
        TenantSecret, Job, Build, BuildAttempt, BuildLogChunk, Artifact, BuildEvent, Bundle)} == {
        "tenancy.Tenant": "pk", "workflows.Workflow": "tenant", "workflows.WorkflowVersion": "workflow__tenant",
        "workflows.WorkflowActivation": "workflow__tenant", "workflows.ActiveWorkflowVersion": "tenant",
        "workflows.Execution": "tenant", "workflows.ExecutionEvent": "execution__tenant",
        "workflows.TenantSecret": "tenant", "builds.Job": "tenant", "builds.Build": "job__tenant",
        "builds.BuildAttempt": "build__job__tenant", "builds.BuildLogChunk": "attempt__build__job__tenant",
        "builds.Artifact": "build__job__tenant", "builds.BuildEvent": "build__job__tenant",
        "bundles.Bundle": "versions__workflow__tenant"}
    assert path_is_multi_valued(Bundle, "versions__workflow__tenant")
    assert not path_is_multi_valued(BuildLogChunk, "attempt__build__job__tenant")


@pytest.fixture
def world():
    """Two tenants with one of everything each, a job without a tenant, and a bundle both tenants use."""
    rows = {}
    drone, _ = make_drone("scope-drone", capacity=2)
    for slug in ("acme", "globex"):
        tenant = make_tenant(slug)
        workflow = make_workflow(tenant)
        version = make_version(workflow, "1.0.0", activate=True)
        execution = Execution.objects.create(tenant=tenant, workflow=workflow, version=version, runtime="process",
                                             timeout_sec=60)
        ExecutionEvent.objects.create(execution=execution, seq=1, type="output", message="hi")
        tenant_secret_set(tenant=tenant, name="TOKEN", value="x")
        job = make_job(name="web", tenant=tenant)
        build = build_trigger(job=job, trigger="api")
        build_claim(drone=drone)
        rows[slug] = {"tenant": tenant, "workflow": workflow, "version": version, "execution": execution,
                      "job": job, "build": build}
    shared = make_bundle_row()
    make_version(rows["acme"]["workflow"], "2.0.0", bundle=shared)
    make_version(rows["acme"]["workflow"], "2.0.1", bundle=shared)
    make_version(rows["globex"]["workflow"], "9.0.0", bundle=shared)
    rows["orphan_job"] = make_job(name="web")
    rows["shared"] = shared
    return rows


SCOPED_MODELS = [Tenant, Workflow, WorkflowVersion, WorkflowActivation, ActiveWorkflowVersion, Execution,
                 ExecutionEvent, TenantSecret, Job, Build, BuildAttempt, BuildEvent, Bundle]


@pytest.mark.parametrize("model", SCOPED_MODELS, ids=lambda model: model._meta.label)
def test_no_principal_sees_nothing(world, model):
    assert model.objects.exists()
    assert not model.objects.visible_to(None).exists()


@pytest.mark.parametrize("scope", ["admin", "engine", "read"])
@pytest.mark.parametrize("model", SCOPED_MODELS, ids=lambda model: model._meta.label)
def test_an_unbound_principal_sees_everything(world, model, scope):
    assert model.objects.visible_to(Principal(scope=scope)).count() == model.objects.count()


@pytest.mark.parametrize("model", SCOPED_MODELS, ids=lambda model: model._meta.label)
def test_a_bound_principal_sees_exactly_its_tenants_rows(world, model):
    acme = world["acme"]["tenant"]
    visible = set(model.objects.visible_to(Principal(scope="engine", tenant_id=acme.pk)).values_list("pk", flat=True))
    path = tenant_path(model)
    own = set(model.objects.filter(**{path: acme.pk}).values_list("pk", flat=True))
    assert visible == own and visible
    others = set(model.objects.exclude(pk__in=own).values_list("pk", flat=True))
    assert not visible & others


def test_a_job_without_a_tenant_is_visible_to_unbound_principals_only(world):
    orphan = world["orphan_job"]
    assert Job.objects.visible_to(Principal(scope="admin")).filter(pk=orphan.pk).exists()
    assert Job.objects.visible_to(Principal(scope="read")).filter(pk=orphan.pk).exists()
    for slug in ("acme", "globex"):
        bound = Principal(scope="engine", tenant_id=world[slug]["tenant"].pk)
        assert not Job.objects.visible_to(bound).filter(pk=orphan.pk).exists()


def test_a_shared_bundle_is_one_row_for_each_tenant_that_uses_it(world):
    shared = world["shared"]
    for slug in ("acme", "globex"):
        bound = Principal(scope="engine", tenant_id=world[slug]["tenant"].pk)
        rows = list(Bundle.objects.visible_to(bound).filter(sha256=shared.sha256))
        assert rows == [shared]  # acme uses it twice: still one row, without DISTINCT
    with CaptureQueriesContext(connection) as queries:
        list(Bundle.objects.visible_to(Principal(scope="engine", tenant_id=world["acme"]["tenant"].pk)))
    assert "EXISTS" in queries[0]["sql"] and "DISTINCT" not in queries[0]["sql"]
    initech = make_tenant("initech")
    assert not Bundle.objects.visible_to(Principal(scope="engine", tenant_id=initech.pk)).exists()


def test_the_rule_is_the_same_as_sees_tenant_for_one_object(world):
    acme = world["acme"]["tenant"]
    for principal in (Principal(scope="admin"), Principal(scope="engine", tenant_id=acme.pk)):
        for job in Job.objects.all():
            assert principal.sees_tenant(job.tenant_id) == Job.objects.visible_to(principal).filter(
                pk=job.pk).exists()
