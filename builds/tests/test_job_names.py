"""Job names: unique per tenant, and for a caller who sees several tenants resolvable without ambiguity."""
import pytest
from django.db import IntegrityError, transaction

from builds.models import Build, Job
from builds.tests.factories import make_job
from conftest import token_client

pytestmark = pytest.mark.django_db

JOB = {"name": "web", "scm_url": "https://git.example.com/x/web.git", "build_config": {"steps": ["make"]}}


def test_two_tenants_may_use_one_name_and_one_tenant_may_not_use_it_twice(tenant, other_tenant):
    acme, globex = token_client("engine", tenant), token_client("engine", other_tenant)
    assert acme.post("/api/v1/jobs", JOB, format="json").status_code == 201
    assert globex.post("/api/v1/jobs", JOB, format="json").status_code == 201
    again = acme.post("/api/v1/jobs", JOB, format="json")
    assert again.status_code == 409 and again.json()["field"] == "name"
    assert sorted(Job.objects.values_list("tenant__slug", flat=True)) == ["acme", "globex"]


def test_a_name_two_tenants_use_is_ambiguous_for_an_admin_naming_the_unambiguous_urls(admin_api, tenant,
                                                                                     other_tenant):
    acme_job, globex_job = make_job(name="web", tenant=tenant), make_job(name="web", tenant=other_tenant)
    for path in ("/api/v1/jobs/web", "/api/v1/jobs/web/trigger"):
        response = admin_api.get(path) if path.endswith("web") else admin_api.post(path, {}, format="json")
        assert response.status_code == 400, response.content
        body = response.json()
        assert (body["error"], body["field"]) == ("ambiguous", "job")
        assert "/api/v1/tenants/acme/jobs/web" in body["detail"] and "/api/v1/tenants/globex/jobs/web" in body["detail"]
    assert not Build.objects.exists()
    assert admin_api.get("/api/v1/tenants/acme/jobs/web").json()["id"] == acme_job.pk
    assert admin_api.get("/api/v1/tenants/globex/jobs/web").json()["id"] == globex_job.pk
    assert admin_api.get(f"/api/v1/jobs/{globex_job.pk}").json()["tenant"] == "globex"
    triggered = admin_api.post("/api/v1/tenants/globex/jobs/web/trigger", {"branch": "dev"}, format="json")
    assert triggered.status_code == 201, triggered.content
    assert triggered.json()["job"] == {"id": globex_job.pk, "name": "web"}
    assert Build.objects.get().job == globex_job
    listing = admin_api.get("/api/v1/tenants/acme/jobs").json()
    assert [job["id"] for job in listing["results"]] == [acme_job.pk]


def test_a_tenant_bound_token_names_its_own_job_as_before(engine_api, tenant, other_tenant):
    own = make_job(name="web", tenant=tenant)
    make_job(name="web", tenant=other_tenant)
    assert engine_api.get("/api/v1/jobs/web").json()["id"] == own.pk
    assert engine_api.post("/api/v1/jobs/web/trigger", {}, format="json").json()["job"]["id"] == own.pk
    assert engine_api.get("/api/v1/tenants/acme/jobs/web").json()["id"] == own.pk
    for path in ("/api/v1/tenants/globex/jobs/web", "/api/v1/tenants/globex/jobs"):
        response = engine_api.get(path)
        assert response.status_code == 404 and response.json()["error"] == "not_found", path
    assert engine_api.post("/api/v1/tenants/globex/jobs/web/trigger", {}, format="json").status_code == 404
    assert Build.objects.filter(job__tenant=other_tenant).count() == 0


def test_jobs_without_a_tenant_are_named_by_id_in_the_ambiguous_answer_and_unique_among_themselves(admin_api,
                                                                                                   tenant):
    make_job(name="web", tenant=tenant)
    assert admin_api.post("/api/v1/jobs", JOB, format="json").status_code == 201  # no tenant
    orphan = Job.objects.get(tenant=None)
    detail = admin_api.get("/api/v1/jobs/web").json()["detail"]
    assert f"/api/v1/jobs/{orphan.pk}" in detail and "/api/v1/tenants/acme/jobs/web" in detail
    again = admin_api.post("/api/v1/jobs", JOB, format="json")
    assert again.status_code == 409 and again.json()["field"] == "name"
    with pytest.raises(IntegrityError), transaction.atomic():  # the database says so too (NULLS NOT DISTINCT)
        Job.objects.create(name="web", scm_url="x", scm_url_normalized="x", build_config={}, queue=orphan.queue)
    assert admin_api.get("/api/v1/tenants/acme/jobs/nope").status_code == 404


def test_an_unknown_tenant_or_a_bad_name_is_a_404(admin_api, tenant):
    make_job(name="web", tenant=tenant)
    assert admin_api.get("/api/v1/tenants/initech/jobs").json()["error"] == "not_found"
    assert admin_api.get("/api/v1/tenants/initech/jobs/web").status_code == 404
    assert admin_api.get("/api/v1/tenants/acme/jobs/not%20a%20slug").status_code == 404
