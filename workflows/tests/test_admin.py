"""The registry admin over Django's test client: pages render, buttons call the services, tokens shown once."""
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.contrib.admin.models import CHANGE, LogEntry
from django.test import Client
from django.urls import reverse

from swarm.core.models import ApiToken, AuditLogEntry
from swarm.core.tokens import token_digest
from workflows.models import WorkflowActivation, WorkflowVersion
from workflows.tests.factories import make_tenant, make_version, make_workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def workflow_with_history():
    tenant = make_tenant("acme")
    workflow = make_workflow(tenant)
    first = make_version(workflow, "1.0.0", activate=True)
    second = make_version(workflow, "1.1.0")
    return workflow, first, second


def active_label(workflow) -> str:
    return WorkflowVersion.objects.get(workflow=workflow, is_active=True).version


@pytest.mark.parametrize("url_name", [
    "admin:index", "admin:tenancy_tenant_changelist", "admin:workflows_workflow_changelist",
    "admin:workflows_workflowversion_changelist", "admin:bundles_bundle_changelist", "admin:core_apitoken_changelist",
    "admin:core_apitoken_add", "admin:workflows_workflow_add", "admin:tenancy_tenant_add",
    "admin:bundles_pendingblob_changelist", "admin:core_auditlogentry_changelist",
])
def test_admin_pages_render(admin_client_, workflow_with_history, url_name):
    response = admin_client_.get(reverse(url_name))
    assert response.status_code == 200


def test_object_pages_render(admin_client_, workflow_with_history):
    workflow, first, second = workflow_with_history
    page = admin_client_.get(reverse("admin:workflows_workflow_change", args=[workflow.pk])).content.decode()
    assert "Version history" in page and "Activation history" in page
    assert page.count('class="button swarm-activate"') == 1  # only the inactive version has a button
    assert first.bundle.sha256[:12] in page and "download .tar.gz" in page
    assert 'id="rollback-button"' in page
    version_page = admin_client_.get(reverse("admin:workflows_workflowversion_change", args=[second.pk]))
    assert version_page.status_code == 200
    assert second.bundle.sha256 in version_page.content.decode()
    assert 'name="_save"' not in version_page.content.decode()  # read-only
    activate_url = reverse("admin:workflows_workflow_activate", args=[workflow.pk, second.pk])
    assert f'formaction="{activate_url}"' in version_page.content.decode()
    assert "csrfmiddlewaretoken" in version_page.content.decode()
    assert admin_client_.get(reverse("admin:bundles_bundle_change", args=[first.bundle.pk])).status_code == 200
    assert admin_client_.get(reverse("admin:tenancy_tenant_change", args=[workflow.tenant.pk])).status_code == 200
    index = admin_client_.get(reverse("admin:index")).content.decode()
    assert 'id="swarm-overview-panel"' in index and "Recent activations" in index


def test_activate_and_rollback_buttons_call_the_services(admin_client_, workflow_with_history, operator):
    workflow, first, second = workflow_with_history
    activate_url = reverse("admin:workflows_workflow_activate", args=[workflow.pk, second.pk])
    response = admin_client_.post(activate_url)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:workflows_workflow_change", args=[workflow.pk])
    assert active_label(workflow) == "1.1.0"
    assert WorkflowActivation.objects.filter(workflow=workflow).first().activated_by == "user:operator"

    assert admin_client_.post(reverse("admin:workflows_workflow_rollback", args=[workflow.pk])).status_code == 302
    assert active_label(workflow) == "1.0.0"
    messages = [str(m) for m in admin_client_.get(response["Location"]).context["messages"]]
    assert any("rolled back to version 1.0.0" in m for m in messages)
    changes = list(LogEntry.objects.filter(object_id=str(workflow.pk), action_flag=CHANGE).order_by("id")
                   .values_list("change_message", flat=True))
    assert changes == ["Activated version 1.1.0.", "Rolled back to version 1.0.0."]


def test_rollback_without_history_shows_an_error(admin_client_):
    workflow = make_workflow(make_tenant("acme"))
    make_version(workflow, "1.0.0", activate=True)
    response = admin_client_.post(reverse("admin:workflows_workflow_rollback", args=[workflow.pk]), follow=True)
    assert any("no previous version" in str(m) for m in response.context["messages"])
    assert active_label(workflow) == "1.0.0"


def test_custom_views_refuse_get_and_need_csrf(operator, workflow_with_history):
    workflow, _, second = workflow_with_history
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    url = reverse("admin:workflows_workflow_activate", args=[workflow.pk, second.pk])
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403
    assert active_label(workflow) == "1.0.0"


def test_custom_views_need_a_staff_login(workflow_with_history):
    workflow, _, second = workflow_with_history
    response = Client().post(reverse("admin:workflows_workflow_activate", args=[workflow.pk, second.pk]))
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert active_label(workflow) == "1.0.0"


def test_activating_a_version_of_another_workflow_is_404(admin_client_, workflow_with_history):
    workflow, _, _ = workflow_with_history
    foreign = make_version(make_workflow(make_tenant("globex")), "9.0.0")
    response = admin_client_.post(reverse("admin:workflows_workflow_activate", args=[workflow.pk, foreign.pk]))
    assert response.status_code == 404
    assert not WorkflowVersion.objects.get(pk=foreign.pk).is_active


def test_list_actions(admin_client_, workflow_with_history):
    workflow, first, second = workflow_with_history
    response = admin_client_.post(reverse("admin:workflows_workflowversion_changelist"), {
        "action": "activate_versions", "_selected_action": [second.pk]})
    assert response.status_code == 302
    assert active_label(workflow) == "1.1.0"
    third = make_version(workflow, "1.2.0")
    admin_client_.post(reverse("admin:workflows_workflowversion_changelist"), {
        "action": "activate_versions", "_selected_action": [first.pk, third.pk]})
    assert active_label(workflow) == "1.1.0"  # two versions of one workflow: refused
    admin_client_.post(reverse("admin:workflows_workflow_changelist"), {
        "action": "rollback_workflows", "_selected_action": [workflow.pk]})
    assert active_label(workflow) == "1.0.0"


def test_token_created_in_admin_is_shown_once_and_works(admin_client_):
    tenant = make_tenant("acme")
    response = admin_client_.post(reverse("admin:core_apitoken_add"), {
        "name": "ci", "scope": "engine", "tenant": tenant.pk, "expires_at_0": "", "expires_at_1": ""}, follow=True)
    page = response.content.decode()
    plaintext = re.search(r'id="new-token-plaintext">([^<]+)<', page).group(1)
    token = ApiToken.objects.get()
    assert (token.scope, token.tenant_id, token.name) == ("engine", tenant.pk, "ci")
    assert token.digest == token_digest(plaintext)
    listing = admin_client_.get(reverse("admin:core_apitoken_changelist")).content.decode()
    assert f"swm_{token.prefix}_…" in listing
    assert plaintext not in listing
    assert plaintext not in admin_client_.get(reverse("admin:core_apitoken_change", args=[token.pk])).content.decode()
    api = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/tenants").json()["results"][0]["slug"] == "acme"

    admin_client_.post(reverse("admin:core_apitoken_changelist"), {
        "action": "revoke_tokens", "_selected_action": [token.pk]})
    assert api.get("/api/v1/tenants").status_code == 401


def test_admin_refuses_drone_tokens(admin_client_):
    response = admin_client_.post(reverse("admin:core_apitoken_add"), {"name": "x", "scope": "drone"})
    assert response.status_code == 200  # the form again, with an error
    assert not ApiToken.objects.exists()


def test_workflow_created_in_admin_goes_through_the_service(admin_client_, django_capture_on_commit_callbacks):
    tenant = make_tenant("acme")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("admin:workflows_workflow_add"), {
            "tenant": tenant.pk, "name": "Hello", "slug": "hello", "description": "", "runtime": "python311",
            "entrypoint": "main.py", "memory_mb": 512, "timeout_sec": 900,
            "versions-TOTAL_FORMS": 0, "versions-INITIAL_FORMS": 0, "activations-TOTAL_FORMS": 0,
            "activations-INITIAL_FORMS": 0,
        })
    assert response.status_code == 302, response.content.decode()[:2000]
    workflow = tenant.workflows.get()
    assert workflow.slug == "hello"
    entry = AuditLogEntry.objects.get(action="workflow.create")
    assert (entry.object_id, entry.actor) == (str(workflow.pk), "user:operator")


def test_workflow_changed_in_admin_goes_through_the_service(admin_client_, workflow_with_history,
                                                            django_capture_on_commit_callbacks):
    workflow, _, _ = workflow_with_history
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("admin:workflows_workflow_change", args=[workflow.pk]), {
            "name": workflow.name, "description": "Says hello.", "runtime": "python311",
            "entrypoint": "main.py", "memory_mb": 1024, "timeout_sec": 900,
            "versions-TOTAL_FORMS": 0, "versions-INITIAL_FORMS": 0, "activations-TOTAL_FORMS": 0,
            "activations-INITIAL_FORMS": 0,
        })
    assert response.status_code == 302, response.content.decode()[:2000]
    workflow.refresh_from_db()
    assert (workflow.description, workflow.memory_mb) == ("Says hello.", 1024)
    entry = AuditLogEntry.objects.get(action="workflow.update")
    assert (entry.object_id, entry.actor) == (str(workflow.pk), "user:operator")
    assert entry.detail == {"fields": ["description", "memory_mb"]}


def test_secret_refused_by_the_service_is_a_form_error(admin_client_):
    tenant = make_tenant("acme")
    response = admin_client_.post(reverse("admin:workflows_tenantsecret_add"), {
        "tenant": tenant.pk, "name": "not a variable", "value": "hunter2"})
    assert response.status_code == 200
    assert "environment variable name" in str(response.context["adminform"].form.errors["name"])
    assert not tenant.secrets.exists()


def test_version_admin_is_read_only(admin_client_, workflow_with_history):
    _, first, _ = workflow_with_history
    response = admin_client_.post(reverse("admin:workflows_workflowversion_change", args=[first.pk]),
                                  {"version": "9.9.9"})
    assert response.status_code == 403
    assert WorkflowVersion.objects.get(pk=first.pk).version == "1.0.0"
    assert admin_client_.post(reverse("admin:workflows_workflowversion_delete", args=[first.pk]),
                              {"post": "yes"}).status_code == 403
    assert WorkflowVersion.objects.filter(pk=first.pk).exists()


@pytest.mark.parametrize("url_name", ["admin:workflows_workflow_changelist", "admin:workflows_workflowversion_changelist",
                                      "admin:bundles_bundle_changelist", "admin:tenancy_tenant_changelist"])
def test_admin_lists_do_not_query_per_row(admin_client_, url_name, django_assert_max_num_queries):
    tenant = make_tenant("acme")

    def add_workflows(first: int, count: int) -> None:
        for index in range(first, first + count):
            workflow = make_workflow(tenant, f"wf-{index}")
            make_version(workflow, "1.0.0", activate=True)
            make_version(workflow, "1.1.0")

    add_workflows(0, 2)
    url = reverse(url_name)
    admin_client_.get(url)
    with CaptureQueriesContext(connection) as baseline:
        assert admin_client_.get(url).status_code == 200
    add_workflows(2, 12)
    with django_assert_max_num_queries(len(baseline)):
        assert admin_client_.get(url).status_code == 200
