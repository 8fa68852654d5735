"""The tenant admin: create and rename through the services, the tenant's workflows on its page, the old URL."""
import pytest
from django.urls import reverse

from swarm.core.models import AuditLogEntry
from tenancy.models import Tenant
from workflows.tests.factories import make_tenant, make_workflow

pytestmark = pytest.mark.django_db


def test_tenant_created_in_admin_goes_through_the_service(admin_client_, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("admin:tenancy_tenant_add"), {
            "name": "Initech", "slug": "initech", "workflows-TOTAL_FORMS": 0, "workflows-INITIAL_FORMS": 0})
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditLogEntry.objects.get(action="tenant.create")
    assert entry.actor == "user:operator"
    assert entry.object_id == str(Tenant.objects.get(slug="initech").pk)


def test_tenant_renamed_in_admin_goes_through_the_service(admin_client_, django_capture_on_commit_callbacks):
    tenant = make_tenant("acme")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("admin:tenancy_tenant_change", args=[tenant.pk]), {
            "name": "Acme Corporation", "workflows-TOTAL_FORMS": 0, "workflows-INITIAL_FORMS": 0})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Tenant.objects.get(pk=tenant.pk).name == "Acme Corporation"
    entry = AuditLogEntry.objects.get(action="tenant.update")
    assert (entry.object_id, entry.actor, entry.tenant_id) == (str(tenant.pk), "user:operator", tenant.pk)
    assert entry.detail == {"name": "Acme Corporation", "previous_name": tenant.name}


def test_a_refusal_of_the_service_is_a_form_error_and_keeps_nothing(admin_client_, monkeypatch,
                                                                    django_capture_on_commit_callbacks):
    from swarm.core.errors import Conflict
    from tenancy import services

    real_create = services.tenant_create

    def create_then_refuse(**kwargs):
        real_create(**kwargs)  # written, then refused: the admin's transaction must take it back
        raise Conflict("Tenant 'initech' already exists.", code="tenant_exists", field="slug")

    monkeypatch.setattr(services, "tenant_create", create_then_refuse)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("admin:tenancy_tenant_add"), {
            "name": "Initech", "slug": "initech", "workflows-TOTAL_FORMS": 0, "workflows-INITIAL_FORMS": 0})
    assert response.status_code == 200  # the form again, not a 500
    assert response.context["adminform"].form.errors == {"slug": ["Tenant 'initech' already exists."]}
    assert not Tenant.objects.filter(slug="initech").exists()
    assert not AuditLogEntry.objects.exists()


def test_a_tenants_page_lists_its_workflows(admin_client_):
    tenant = make_tenant("acme")
    make_workflow(tenant, "resize")
    make_workflow(make_tenant("globex"), "elsewhere")
    page = admin_client_.get(reverse("admin:tenancy_tenant_change", args=[tenant.pk]))
    assert page.status_code == 200
    assert "resize" in page.content.decode() and "elsewhere" not in page.content.decode()


@pytest.mark.parametrize(("old", "new"), [
    ("/admin/workflows/tenant/", "/admin/tenancy/tenant/"),
    ("/admin/workflows/tenant/add/", "/admin/tenancy/tenant/add/"),
    ("/admin/workflows/tenant/7/change/", "/admin/tenancy/tenant/7/change/"),
    ("/admin/workflows/tenant/?q=acme", "/admin/tenancy/tenant/?q=acme"),
])
def test_the_old_tenant_admin_urls_redirect_to_the_new_ones(admin_client_, old, new):
    response = admin_client_.get(old)
    assert response.status_code == 301
    assert response["Location"] == new


def test_the_tenant_pages_answer_at_their_new_address(admin_client_):
    tenant = make_tenant("acme")
    for url in (reverse("admin:tenancy_tenant_changelist"), reverse("admin:tenancy_tenant_add"),
                reverse("admin:tenancy_tenant_change", args=[tenant.pk])):
        assert url.startswith("/admin/tenancy/tenant/")
        assert admin_client_.get(url).status_code == 200
