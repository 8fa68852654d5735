"""The registry API: permission matrix, tenant isolation, activation semantics, DB rules, query counts, errors."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from bundles.models import Bundle
from conftest import make_bundle, token_client, upload
from swarm.core.services import api_token_issue, api_token_revoke
from workflows.models import ActiveWorkflowVersion, Workflow, WorkflowActivation, WorkflowVersion
from workflows.tests.factories import make_bundle_row, make_tenant, make_version, make_workflow

pytestmark = pytest.mark.django_db


@dataclass
class TenantWorld:
    """One tenant's objects: a workflow whose 2.0.0 replaced 1.0.0, and a bundle only it uses."""

    tenant: object
    workflow: Workflow
    first: WorkflowVersion
    second: WorkflowVersion

    @property
    def bundle_hash(self) -> str:
        return self.second.bundle.sha256


def build_world(slug: str) -> TenantWorld:
    tenant = make_tenant(slug)
    workflow = make_workflow(tenant, "hello")
    first = make_version(workflow, "1.0.0", activate=True)
    second = make_version(workflow, "2.0.0", activate=True)
    return TenantWorld(tenant=tenant, workflow=workflow, first=first, second=second)


@pytest.fixture
def worlds():
    """Tenant A (`acme`) and tenant B (`globex`), each with a workflow, two versions and own bundles."""
    return build_world("acme"), build_world("globex")


# Every endpoint of workflows/api and bundles/api, as (name, method, path template, body maker).
# Templates are filled with one tenant's objects; `{n}` gives each call fresh slugs/labels.
ENDPOINTS = {
    "tenant-list": ("get", "/api/v1/tenants"),
    "tenant-create": ("post", "/api/v1/tenants"),
    "workflow-list": ("get", "/api/v1/tenants/{tenant}/workflows"),
    "workflow-create": ("post", "/api/v1/tenants/{tenant}/workflows"),
    "workflow-detail": ("get", "/api/v1/workflows/{workflow}"),
    "version-list": ("get", "/api/v1/workflows/{workflow}/versions"),
    "active": ("get", "/api/v1/workflows/{workflow}/active"),
    "activate": ("post", "/api/v1/workflows/{workflow}/versions/{version}/activate"),
    "rollback": ("post", "/api/v1/workflows/{workflow}/rollback"),
    "bundle-upload": ("post", "/api/v1/bundles"),
    "bundle-detail": ("get", "/api/v1/bundles/{bundle}"),
    "bundle-head": ("head", "/api/v1/bundles/{bundle}"),
}
READ_ENDPOINTS = [name for name, (method, _) in ENDPOINTS.items() if method in ("get", "head")]
WRITE_ENDPOINTS = [name for name, (method, _) in ENDPOINTS.items() if method == "post"]


def call(client: APIClient, name: str, world: TenantWorld):
    """Call one endpoint of the matrix against `world`'s objects."""
    method, template = ENDPOINTS[name]
    path = template.format(tenant=world.tenant.slug, workflow=world.workflow.pk, version=world.first.pk,
                           bundle=world.bundle_hash)
    if name == "bundle-upload":
        return upload(client, make_bundle(), tenant=world.tenant.slug, workflow="pushed", version="1.0.0")
    if name == "tenant-create":
        return client.post(path, {"name": "Initech", "slug": "initech"}, format="json")
    if name == "workflow-create":
        return client.post(path, {"slug": "created"}, format="json")
    return getattr(client, method)(path)


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.content)
    if response.request["REQUEST_METHOD"] != "HEAD":
        body = response.json()
        assert body["error"] == code, body
        assert body["detail"]


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_anonymous_is_401_json(worlds, name):
    response = call(APIClient(), name, worlds[0])
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def _forged(db):
    return "swm_0123abcd_" + "x" * 40


def _revoked(db):
    token, plaintext = api_token_issue(scope="admin", name="revoked")
    api_token_revoke(token=token)
    return plaintext


def _expired(db):
    _, plaintext = api_token_issue(scope="admin", name="expired", expires_at=timezone.now() - timedelta(seconds=1))
    return plaintext


def _malformed(db):
    return "not-a-swarm-token"


@pytest.mark.parametrize("make_token", [_forged, _revoked, _expired, _malformed], ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_bad_tokens_are_401(worlds, name, make_token, db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(db)}")
    assert_error(call(client, name, worlds[0]), 401, "authentication_failed")


def test_wrong_authorization_keyword_is_401(worlds):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + token_client("admin").token)
    assert_error(client.get("/api/v1/tenants"), 401, "authentication_failed")


@pytest.mark.parametrize("scope", ["drone", "execution"])
@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_drone_and_execution_scopes_are_refused(worlds, name, scope):
    client = token_client(scope, worlds[0].tenant)
    assert_error(call(client, name, worlds[0]), 403, "permission_denied")


@pytest.mark.parametrize("name", READ_ENDPOINTS)
def test_read_scope_can_read(worlds, name):
    response = call(token_client("read", worlds[0].tenant), name, worlds[0])
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("name", WRITE_ENDPOINTS)
def test_read_scope_cannot_write(worlds, name):
    before = (WorkflowVersion.objects.count(), WorkflowActivation.objects.count(), Workflow.objects.count())
    response = call(token_client("read", worlds[0].tenant), name, worlds[0])
    assert_error(response, 403, "permission_denied")
    assert (WorkflowVersion.objects.count(), WorkflowActivation.objects.count(), Workflow.objects.count()) == before


# What a tenant-bound engine token gets on its own tenant's objects.
ENGINE_OWN_STATUS = {
    "tenant-list": 200, "tenant-create": 403, "workflow-list": 200, "workflow-create": 201, "workflow-detail": 200,
    "version-list": 200, "active": 200, "activate": 200, "rollback": 200, "bundle-upload": 201,
    "bundle-detail": 200, "bundle-head": 200,
}


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_engine_token_works_within_its_tenant(worlds, name):
    response = call(token_client("engine", worlds[0].tenant), name, worlds[0])
    assert response.status_code == ENGINE_OWN_STATUS[name], response.content


@pytest.mark.parametrize("name", sorted(set(ENDPOINTS) - {"tenant-list", "tenant-create"}))
def test_engine_token_gets_404_for_another_tenants_objects(worlds, name):
    own, other = worlds
    counts = lambda: (WorkflowVersion.objects.count(), WorkflowActivation.objects.count(),  # noqa: E731
                      Workflow.objects.count(), Bundle.objects.count())
    before = counts()
    active_before = ActiveWorkflowVersion.objects.get(workflow=other.workflow).version_id
    response = call(token_client("engine", own.tenant), name, other)
    assert response.status_code == 404, response.content
    if name != "bundle-head":
        assert response.json()["error"] == "not_found"
    assert counts() == before
    assert ActiveWorkflowVersion.objects.get(workflow=other.workflow).version_id == active_before


def test_engine_cannot_activate_another_tenants_version_through_its_own_workflow(worlds):
    own, other = worlds
    client = token_client("engine", own.tenant)
    response = client.post(f"/api/v1/workflows/{own.workflow.pk}/versions/{other.first.pk}/activate")
    assert_error(response, 404, "not_found")
    assert WorkflowVersion.objects.get(pk=other.first.pk).is_active is False


def test_tenant_listing_is_scoped(worlds):
    own, _ = worlds
    assert [t["slug"] for t in token_client("engine", own.tenant).get("/api/v1/tenants").json()["results"]] == ["acme"]
    assert [t["slug"] for t in token_client("read", own.tenant).get("/api/v1/tenants").json()["results"]] == ["acme"]
    assert [t["slug"] for t in token_client("admin").get("/api/v1/tenants").json()["results"]] == ["acme", "globex"]


def test_shared_bundle_is_visible_to_each_tenant_that_uses_it(worlds):
    own, other = worlds
    shared = make_bundle_row()
    make_version(other.workflow, "3.0.0", bundle=shared)
    engine = token_client("engine", own.tenant)
    assert engine.get(f"/api/v1/bundles/{shared.sha256}").status_code == 404
    make_version(own.workflow, "3.0.0", bundle=shared)
    assert engine.get(f"/api/v1/bundles/{shared.sha256}").status_code == 200


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_admin_sees_everything(worlds, name):
    response = call(token_client("admin"), name, worlds[1])
    expected = dict(ENGINE_OWN_STATUS, **{"tenant-create": 201})[name]
    assert response.status_code == expected, response.content


def test_unbound_engine_token_sees_all_tenants(worlds):
    engine = token_client("engine")
    assert engine.get(f"/api/v1/workflows/{worlds[1].workflow.pk}").status_code == 200
    assert engine.get("/api/v1/tenants").json()["count"] == 2


def test_staff_session_acts_as_admin_and_needs_csrf(worlds, django_user_model):
    user = django_user_model.objects.create_user("ops", password="pw-ops-123", is_staff=True)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(f"/api/v1/workflows/{worlds[1].workflow.pk}").status_code == 200
    refused = client.post(f"/api/v1/workflows/{worlds[1].workflow.pk}/rollback")
    assert_error(refused, 403, "permission_denied")
    assert "CSRF" in refused.json()["detail"]


def test_non_staff_session_is_not_authenticated(worlds, django_user_model):
    client = APIClient()
    client.force_login(django_user_model.objects.create_user("visitor", password="pw-visitor-1"))
    assert_error(client.get("/api/v1/tenants"), 401, "not_authenticated")


# --- activation and rollback --------------------------------------------------


def active_label(client, workflow_id: int) -> str:
    response = client.get(f"/api/v1/workflows/{workflow_id}/active")
    assert response.status_code == 200, response.content
    return response.json()["version"]


def test_activate_then_rollback_toggles_between_versions(engine_api, tenant):
    workflow = make_workflow(tenant)
    v1 = make_version(workflow, "1.0.0", activate=True)
    v2 = make_version(workflow, "1.1.0")
    v3 = make_version(workflow, "1.2.0")
    assert active_label(engine_api, workflow.pk) == "1.0.0"

    response = engine_api.post(f"/api/v1/workflows/{workflow.pk}/versions/{v3.pk}/activate")
    assert response.status_code == 200
    assert response.json()["id"] == v3.pk and response.json()["is_active"] is True
    assert active_label(engine_api, workflow.pk) == "1.2.0"

    rolled = engine_api.post(f"/api/v1/workflows/{workflow.pk}/rollback")
    assert rolled.status_code == 200
    assert rolled.json()["version"] == "1.0.0"
    assert active_label(engine_api, workflow.pk) == "1.0.0"
    # Rolling back again returns to the version that was rolled away from.
    assert engine_api.post(f"/api/v1/workflows/{workflow.pk}/rollback").json()["version"] == "1.2.0"
    assert active_label(engine_api, workflow.pk) == "1.2.0"

    history = list(WorkflowActivation.objects.filter(workflow=workflow).order_by("id").values_list(
        "reason", "version_id", "previous_version_id"))
    assert history == [("activate", v1.pk, None), ("activate", v3.pk, v1.pk), ("rollback", v1.pk, v3.pk),
                       ("rollback", v3.pk, v1.pk)]
    assert WorkflowVersion.objects.filter(workflow=workflow, is_active=True).count() == 1
    assert not WorkflowVersion.objects.get(pk=v2.pk).is_active


def test_activating_the_active_version_changes_nothing(engine_api, tenant):
    workflow = make_workflow(tenant)
    v1 = make_version(workflow, "1.0.0", activate=True)
    before = WorkflowActivation.objects.count()
    assert engine_api.post(f"/api/v1/workflows/{workflow.pk}/versions/{v1.pk}/activate").status_code == 200
    assert WorkflowActivation.objects.count() == before


def test_rollback_without_previous_version_is_409(engine_api, tenant):
    workflow = make_workflow(tenant)
    response = engine_api.post(f"/api/v1/workflows/{workflow.pk}/rollback")
    assert_error(response, 409, "no_previous_version")
    make_version(workflow, "1.0.0", activate=True)
    response = engine_api.post(f"/api/v1/workflows/{workflow.pk}/rollback")
    assert_error(response, 409, "no_previous_version")
    assert active_label(engine_api, workflow.pk) == "1.0.0"


def test_activate_unknown_version_is_404(engine_api, tenant):
    workflow = make_workflow(tenant)
    other_workflow = make_workflow(tenant, "other")
    foreign = make_version(other_workflow, "1.0.0")
    assert_error(engine_api.post(f"/api/v1/workflows/{workflow.pk}/versions/999999/activate"), 404, "not_found")
    assert_error(engine_api.post(f"/api/v1/workflows/{workflow.pk}/versions/{foreign.pk}/activate"), 404,
                 "not_found")


def test_active_body_matches_the_design_contract(engine_api, tenant):
    workflow = make_workflow(tenant, runtime="node20", entrypoint="index.js", memory_mb=256, timeout_sec=60)
    version = make_version(workflow, "1.0.0", activate=True)
    body = engine_api.get(f"/api/v1/workflows/{workflow.pk}/active").json()
    assert set(body) == {"workflow_id", "version_id", "version", "bundle_url", "bundle_hash", "runtime",
                         "entrypoint", "memory_mb", "timeout_sec", "deployed_at", "canary"}
    assert body["canary"] is None  # names the traffic split when a canary is active (issue 12)
    assert body["workflow_id"] == workflow.pk
    assert body["version_id"] == version.pk
    assert body["version"] == "1.0.0"
    assert body["bundle_hash"] == version.bundle.sha256
    assert version.bundle.sha256 in body["bundle_url"]
    assert (body["runtime"], body["entrypoint"], body["memory_mb"], body["timeout_sec"]) == ("node20", "index.js",
                                                                                           256, 60)
    assert body["deployed_at"] == version.activated_at.isoformat().replace("+00:00", "Z")


def test_active_without_active_version_is_404(engine_api, tenant):
    workflow = make_workflow(tenant)
    make_version(workflow, "1.0.0")
    assert_error(engine_api.get(f"/api/v1/workflows/{workflow.pk}/active"), 404, "no_active_version")


# --- rules the database enforces ---------------------------------------------------


def test_database_refuses_two_active_versions(tenant):
    workflow = make_workflow(tenant)
    make_version(workflow, "1.0.0", activate=True)
    second = make_version(workflow, "2.0.0")
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowVersion.objects.filter(pk=second.pk).update(is_active=True)
    second.is_active = True
    with pytest.raises(IntegrityError), transaction.atomic():
        second.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowVersion.objects.create(workflow=workflow, version="3.0.0", bundle=make_bundle_row(), is_active=True)
    assert WorkflowVersion.objects.filter(workflow=workflow, is_active=True).count() == 1


@pytest.mark.parametrize(
    "change",
    [
        {"version": "9.9.9"},
        {"metadata": {"tampered": True}},
        "bundle",
        "workflow",
    ],
    ids=["version", "metadata", "bundle", "workflow"],
)
def test_versions_are_immutable_in_the_database(tenant, change):
    workflow = make_workflow(tenant)
    version = make_version(workflow, "1.0.0", metadata={"commit": "abc"})
    if change == "bundle":
        change = {"bundle": make_bundle_row()}
    elif change == "workflow":
        change = {"workflow": make_workflow(tenant, "elsewhere")}
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        WorkflowVersion.objects.filter(pk=version.pk).update(**change)
    for field, value in change.items():
        setattr(version, field, value)
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        version.save()
    stored = WorkflowVersion.objects.get(pk=version.pk)
    assert (stored.version, stored.metadata, stored.workflow_id) == ("1.0.0", {"commit": "abc"}, workflow.pk)


def test_activation_fields_may_still_change(tenant):
    workflow = make_workflow(tenant)
    version = make_version(workflow, "1.0.0")
    WorkflowVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
    assert WorkflowVersion.objects.get(pk=version.pk).is_active


def test_active_workflow_versions_view(tenant):
    workflow = make_workflow(tenant, runtime="python311", entrypoint="main.py")
    make_version(workflow, "1.0.0", activate=True)
    second = make_version(workflow, "2.0.0", activate=True)
    idle = make_workflow(tenant, "idle")
    make_version(idle, "1.0.0")

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT version_id, workflow_id, tenant_slug, workflow_slug, version_label, bundle_hash, bundle_size,"
            " runtime, entrypoint FROM active_workflow_versions WHERE tenant_id = %s ORDER BY workflow_slug",
            [tenant.pk],
        )
        rows = cursor.fetchall()
    assert rows == [(second.pk, workflow.pk, "acme", "hello", "2.0.0", second.bundle.sha256, second.bundle.size,
                     "python311", "main.py")]

    row = ActiveWorkflowVersion.objects.get(workflow=workflow)
    assert row.version_id == second.pk
    assert row.version_label == "2.0.0"
    assert row.bundle_hash == second.bundle.sha256
    assert row.tenant_id == tenant.pk
    assert not ActiveWorkflowVersion.objects.filter(workflow=idle).exists()


# --- query counts --------------------------------------------------------------


def populate(tenant, first_index: int, count: int) -> None:
    for index in range(first_index, first_index + count):
        workflow = make_workflow(tenant, f"wf-{index}")
        make_version(workflow, "1.0.0", activate=True)
        make_version(workflow, "1.1.0")


def queries_for(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.mark.parametrize("path", ["/api/v1/tenants", "/api/v1/tenants/acme/workflows",
                                  "/api/v1/workflows/{workflow}/versions"])
def test_list_query_counts_do_not_grow_with_rows(engine_api, tenant, path, django_assert_max_num_queries):
    populate(tenant, 0, 2)
    target = Workflow.objects.filter(tenant=tenant).first()
    path = path.format(workflow=target.pk)
    engine_api.get(path)  # settles last_used_at, which is written at most once a minute
    baseline = queries_for(engine_api, path)
    populate(tenant, 2, 15)
    for label in ("2.0.0", "2.1.0", "2.2.0", "2.3.0"):
        make_version(target, label)
    with django_assert_max_num_queries(baseline):
        response = engine_api.get(path)
    assert response.status_code == 200
    if "workflows" in path and "versions" not in path:
        listed = response.json()
        assert listed["count"] == 17 and len(listed["results"]) == 17
        assert {item["active_version"] for item in listed["results"]} == {"1.0.0"}


def test_workflow_detail_reports_active_version(engine_api, tenant):
    workflow = make_workflow(tenant)
    make_version(workflow, "1.0.0", activate=True)
    make_version(workflow, "1.1.0", activate=True)
    assert engine_api.get(f"/api/v1/workflows/{workflow.pk}").json()["active_version"] == "1.1.0"


# --- JSON errors for transport-level mistakes -----------------------------------


def test_unknown_api_path_is_json_404(admin_api):
    response = admin_api.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "not_found"


def test_method_not_allowed_is_json_405(admin_api, tenant):
    workflow = make_workflow(tenant)
    response = admin_api.delete(f"/api/v1/workflows/{workflow.pk}")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "DELETE" in response.json()["detail"]
    assert Workflow.objects.filter(pk=workflow.pk).exists()


def test_malformed_json_is_400_parse_error(admin_api, tenant):
    response = admin_api.post("/api/v1/tenants/acme/workflows", data='{"slug": "broken",',
                              content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"
    assert not Workflow.objects.filter(slug="broken").exists()


def test_bundle_upload_must_be_multipart(admin_api, tenant):
    response = admin_api.post("/api/v1/bundles", {"tenant": "acme"}, format="json")
    assert_error(response, 415, "unsupported_media_type")


def test_invalid_field_names_the_field(admin_api, tenant):
    response = admin_api.post("/api/v1/tenants/acme/workflows", {"slug": "ok", "runtime": "cobol"}, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == "runtime"
    missing = admin_api.post("/api/v1/tenants/acme/workflows", {}, format="json")
    assert missing.json() == {"error": "missing_field", "detail": missing.json()["detail"], "field": "slug"}


def test_duplicate_workflow_and_tenant_are_409(admin_api, tenant):
    make_workflow(tenant, "dup")
    response = admin_api.post("/api/v1/tenants/acme/workflows", {"slug": "dup"}, format="json")
    assert_error(response, 409, "workflow_exists")
    response = admin_api.post("/api/v1/tenants", {"name": "Acme again", "slug": "acme"}, format="json")
    assert_error(response, 409, "tenant_exists")
    assert response.json()["field"] == "slug"


def test_upload_racing_the_orphan_sweep_is_a_clean_503(engine_api, monkeypatch):
    from bundles import services as bundle_services
    from bundles.services import bundle_publish as real_publish

    def publish_then_swept(*, received):
        published = real_publish(received=received)
        Bundle.objects.filter(pk=published.bundle.pk).delete()  # what a sweep holding the row lock would do
        return published

    monkeypatch.setattr(bundle_services, "bundle_publish", publish_then_swept)
    response = upload(engine_api, make_bundle())
    assert_error(response, 503, "upload_raced_sweep")
    assert response["Retry-After"] == "1"
    assert not WorkflowVersion.objects.exists()
    monkeypatch.undo()
    assert upload(engine_api, make_bundle()).status_code == 201
