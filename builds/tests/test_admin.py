"""The jobs admin over Django's test client: saves go through the services and are audited."""
import json

import pytest
from django.urls import reverse

from builds.models import Job, Queue
from builds.tests.factories import make_job
from swarm.core.errors import Conflict
from swarm.core.models import AuditLogEntry

pytestmark = pytest.mark.django_db


def job_form(**fields) -> dict:
    return {
        "tenant": "", "name": "app", "description": "", "scm_url": "https://git.example.com/Acme/App.git",
        "default_branch": "main", "branch_filter": "", "build_config": json.dumps({"steps": ["make test"]}),
        "queue": Queue.objects.get(name="default").pk, "webhook_secret": "", "enabled": "on", **fields,
    }


def test_job_created_in_admin_goes_through_the_service(admin_client_, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("admin:builds_job_add"), job_form())
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get(name="app")
    assert job.scm_url_normalized == "git.example.com/Acme/App"
    assert response["Location"] == reverse("admin:builds_job_changelist")
    entry = AuditLogEntry.objects.get(action="job.create")
    assert (entry.object_id, entry.actor) == (str(job.pk), "user:operator")


def test_job_changed_in_admin_goes_through_the_service(admin_client_, django_capture_on_commit_callbacks):
    job = make_job(name="app")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("admin:builds_job_change", args=[job.pk]),
                                      job_form(scm_url="https://git.example.com/acme/other.git", enabled=""))
    assert response.status_code == 302, response.content.decode()[:2000]
    job.refresh_from_db()
    assert (job.scm_url_normalized, job.enabled) == ("git.example.com/acme/other", False)
    entry = AuditLogEntry.objects.get(action="job.update")
    assert (entry.object_id, entry.actor) == (str(job.pk), "user:operator")


def test_a_refusal_of_the_service_is_a_form_error_and_keeps_nothing(admin_client_, monkeypatch):
    from builds import services

    def refuse(**kwargs):
        raise Conflict("A job named 'app' already exists.", field="name")

    monkeypatch.setattr(services, "job_create", refuse)
    response = admin_client_.post(reverse("admin:builds_job_add"), job_form())
    assert response.status_code == 200  # the form again, not a 500
    assert response.context["adminform"].form.errors == {"name": ["A job named 'app' already exists."]}
    assert not Job.objects.exists()
