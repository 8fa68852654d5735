"""Secrets never in logs: a tenant secret, a join token, a webhook secret (and a job secret) pushed through
every path that handles them, against the real server; then every log line — this process's at DEBUG,
SQL included, and the live server's log file — and every API response is searched for them.

The answers allowed to carry a secret go to its own holder: the metadata service's boot plan (the tenant
secret, to the execution's token) and the bootstrap script (the join token, to whoever presented it).
"""
from __future__ import annotations

import json
import logging
import re
import uuid

import httpx
import pytest
from django.db import connection

from builds.models import Build, WebhookDelivery
from builds.tasks import process_webhook_delivery
from conftest import make_bundle
from drones.services import join_token_issue
from swarm.core.services import api_token_issue
from workflows.models import Execution, TenantSecret, Workflow

pytestmark = [pytest.mark.live]

TENANT_SECRET = "tenant-secret-" + uuid.uuid4().hex
WEBHOOK_SECRET = "webhook-secret-" + uuid.uuid4().hex
JOB_SECRET = "job-secret-" + uuid.uuid4().hex
GITLAB_URL = "https://gitlab.example.com/acme/leaky.git"


def _csrf(client: httpx.Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200, (url, page.status_code)
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def test_secrets_never_reach_a_log_line_or_another_response(live_url, live_server_process, caplog,
                                                             django_user_model):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django")  # Django's own loggers stop at INFO by default
    connection.force_debug_cursor = True  # this process's SQL is logged (django.db.backends) and searched too
    responses: list[str] = []
    metadata_answers: list[str] = []

    def keep(response: httpx.Response, *, metadata: bool = False) -> httpx.Response:
        text = "\n".join([response.text, *(f"{name}: {value}" for name, value in response.headers.items())])
        (metadata_answers if metadata else responses).append(text)
        return response

    _, engine_token = api_token_issue(scope="engine", name="leak-engine")
    _, join_token = join_token_issue(name="leak-join")
    api = httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {engine_token}"}, timeout=30)
    anonymous = httpx.Client(base_url=live_url, timeout=30)

    # A workflow and its first version, pushed like any engine does (the tenant asked for explicitly).
    pushed = keep(api.post("/api/v1/bundles", data={"tenant": "leaky", "workflow": "app", "version": "1.0.0",
                                                    "create_tenant": "true"},
                           files={"bundle": ("bundle.tar.gz", make_bundle(), "application/gzip")}))
    assert pushed.status_code == 201, pushed.text
    workflow = Workflow.objects.get(tenant__slug="leaky", slug="app")

    # The tenant secret, entered in the admin (the only place it is written) and attached to the workflow.
    django_user_model.objects.create_superuser("leak-operator", "ops@example.test", "leak-operator-pass")
    admin = httpx.Client(base_url=live_url, timeout=30, follow_redirects=False)
    token = _csrf(admin, "/admin/login/")
    logged_in = admin.post("/admin/login/?next=/admin/", data={
        "username": "leak-operator", "password": "leak-operator-pass", "csrfmiddlewaretoken": token})
    assert logged_in.status_code == 302, logged_in.text
    token = _csrf(admin, "/admin/workflows/tenantsecret/add/")
    saved = keep(admin.post("/admin/workflows/tenantsecret/add/", data={
        "tenant": str(workflow.tenant_id), "name": "API_KEY", "value": TENANT_SECRET,
        "workflows": str(workflow.pk), "csrfmiddlewaretoken": token}))
    assert saved.status_code == 302, saved.text
    assert TenantSecret.objects.filter(name="API_KEY").exists()
    keep(admin.get(f"/admin/workflows/tenantsecret/{TenantSecret.objects.get().pk}/change/"))

    # An execution that uses it: spawned, its boot plan fetched with its own token, output reporting it.
    spawned = keep(api.post(f"/api/v1/workflows/{workflow.pk}/executions", json={"env": {"WHO": "x"}}))
    assert spawned.status_code == 202, spawned.text
    execution = Execution.objects.get(pk=spawned.json()["id"])
    _, metadata_token = api_token_issue(scope="execution", tenant=execution.tenant, subject_type="execution",
                                        subject_id=str(execution.pk))
    boot = keep(anonymous.get("/api/v1/metadata", headers={"X-Swarm-Metadata-Token": metadata_token}),
                metadata=True)
    assert boot.status_code == 200 and boot.json()["secrets"] == {"API_KEY": TENANT_SECRET}
    reported = keep(anonymous.post("/api/v1/metadata/events", headers={"X-Swarm-Metadata-Token": metadata_token},
                                   json={"events": [{"type": "started"},
                                                    {"type": "output", "stream": "stdout",
                                                     "message": f"the key is {TENANT_SECRET}"},
                                                    {"type": "error", "message": f"boom {TENANT_SECRET}",
                                                     "data": {"why": TENANT_SECRET}}]}))
    assert reported.status_code == 200, reported.text
    for path in (f"/api/v1/executions/{execution.pk}", f"/api/v1/executions/{execution.pk}/events",
                 f"/api/v1/workflows/{workflow.pk}/executions"):
        keep(api.get(path))
    keep(admin.get(f"/admin/workflows/execution/{execution.pk}/change/"))

    # Agent join: the bootstrap script for the token, then the registration, then misuse of it as a bearer.
    # The bootstrap script is the join token holder's own: it carries the token to the new machine.
    script = keep(anonymous.get("/api/v1/provision/bootstrap", params={"token": join_token}), metadata=True)
    assert script.status_code == 200 and join_token in script.text
    joined = keep(anonymous.post("/api/v1/drones/register", json={
        "join_token": join_token, "name": "leak-drone", "hostname": "leak", "ip": "127.0.0.1",
        "drone_type": "bare-metal", "labels": [], "capacity": 1, "version": "1", "os": "linux", "arch": "x86_64"}))
    assert joined.status_code in (200, 201), joined.text
    keep(anonymous.get("/api/v1/tenants", headers={"Authorization": f"Bearer {join_token}"}))
    keep(anonymous.post("/api/v1/drones/register", json={"join_token": join_token + "x", "name": "leak-2"}))

    # A job with a webhook secret and a build secret, through the API; a GitLab push carrying the secret.
    job = keep(api.post("/api/v1/jobs", json={
        "name": "leaky", "scm_url": GITLAB_URL, "build_config": {"steps": ["echo hi"]},
        "webhook_secret": WEBHOOK_SECRET, "secrets": {"DEPLOY_KEY": JOB_SECRET}}))
    assert job.status_code == 201, job.text
    keep(api.get(f"/api/v1/jobs/{job.json()['id']}"))
    push = json.dumps({"ref": "refs/heads/main", "after": "c" * 40, "checkout_sha": "c" * 40,
                       "user_username": "dev", "project": {"git_http_url": GITLAB_URL}})
    hook_headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"}
    wrong = keep(anonymous.post("/api/v1/webhooks/gitlab", content=push,
                                headers={**hook_headers, "X-Gitlab-Token": WEBHOOK_SECRET + "-wrong",
                                         "X-Gitlab-Event-UUID": "leak-0"}))
    assert wrong.status_code == 401
    delivered = keep(anonymous.post("/api/v1/webhooks/gitlab", content=push,
                                    headers={**hook_headers, "X-Gitlab-Token": WEBHOOK_SECRET,
                                             "X-Gitlab-Event-UUID": "leak-1"}))
    assert delivered.status_code == 202, delivered.text
    process_webhook_delivery(WebhookDelivery.objects.get(delivery_id="leak-1").pk)
    assert Build.objects.filter(job_id=job.json()["id"]).exists()
    keep(api.get("/api/v1/builds"))
    keep(admin.get(f"/admin/builds/job/{job.json()['id']}/change/"))

    connection.force_debug_cursor = False
    secrets = {"tenant secret": TENANT_SECRET, "join token": join_token, "webhook secret": WEBHOOK_SECRET,
               "job secret": JOB_SECRET}
    server_log = live_server_process.log_text()
    # Every record of this process but those of the test's own HTTP client (httpx logs the URLs it asks for).
    process_lines = [record.getMessage() for record in caplog.records
                     if not record.name.startswith(("httpx", "httpcore"))]
    assert any("SELECT" in line for line in process_lines), "SQL was logged, so it was searched"
    for what, value in secrets.items():
        assert value not in server_log, f"the {what} is in the server's log file"
        leaked = [line for line in process_lines if value in line]
        assert not leaked, f"the {what} is in a log line: {leaked[0][:300]}"
        leaked = [text for text in responses if value in text]
        assert not leaked, f"the {what} is in an API or admin answer: {leaked[0][:300]}"
    assert all(JOB_SECRET not in text and WEBHOOK_SECRET not in text for text in metadata_answers)
    assert all(join_token not in text for text in metadata_answers if "secrets" in text)
