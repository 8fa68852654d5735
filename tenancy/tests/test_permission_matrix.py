"""A permission matrix per token scope on a representative set of endpoints (NetBox style), and list query counts.

Tokens are bound to the tenant whose objects are asked for (admin is
unbound): what each scope may do on its own tenant's objects. Another
tenant's objects are tenancy/tests/test_isolation.py's.
"""
from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from builds.services import build_trigger
from builds.tests.factories import make_drone, make_job
from conftest import token_client
from swarm.core.services import api_token_issue
from workflows.models import Execution
from workflows.tests.factories import make_tenant, make_version, make_workflow

pytestmark = pytest.mark.django_db

SCOPES = ["admin", "engine", "read", "drone", "execution"]
D = 403  # refused for the token's scope
# endpoint: (method, path template, {scope: status})
MATRIX = {
    "list tenants": ("get", "/api/v1/tenants", [200, 200, 200, D, D]),
    "create a tenant": ("post", "/api/v1/tenants", [201, D, D, D, D]),
    "list a tenant's workflows": ("get", "/api/v1/tenants/acme/workflows", [200, 200, 200, D, D]),
    "describe a workflow": ("get", "/api/v1/workflows/{workflow}", [200, 200, 200, D, D]),
    "what to boot": ("get", "/api/v1/workflows/{workflow}/active", [200, 200, 200, D, D]),
    "roll back": ("post", "/api/v1/workflows/{workflow}/rollback", [200, 200, D, D, D]),
    "spawn": ("post", "/api/v1/workflows/{workflow}/executions", [202, 202, D, D, D]),
    "describe an execution": ("get", "/api/v1/executions/{execution}", [200, 200, 200, D, D]),
    "cancel an execution": ("post", "/api/v1/executions/{execution}/cancel", [202, 202, D, D, D]),
    "list jobs": ("get", "/api/v1/jobs", [200, 200, 200, D, D]),
    "describe a job by tenant and name": ("get", "/api/v1/tenants/acme/jobs/web", [200, 200, 200, D, D]),
    "trigger a job": ("post", "/api/v1/jobs/{job}/trigger", [201, 201, D, D, D]),
    "change a job": ("patch", "/api/v1/jobs/{job}", [200, 200, D, D, D]),
    "list builds": ("get", "/api/v1/builds?state=pending", [200, 200, 200, D, D]),
    "read a build's log": ("get", "/api/v1/builds/{build}/log", [200, 200, 200, D, D]),
    "cancel a build": ("post", "/api/v1/builds/{build}/cancel", [200, 200, D, D, D]),
    "describe a bundle": ("get", "/api/v1/bundles/{bundle}", [200, 200, 200, D, D]),
    "list drones": ("get", "/api/v1/drones", [200, 200, 200, D, D]),
    "pause a drone": ("post", "/api/v1/drones/matrix-drone/pause", [200, D, D, D, D]),
    "list queues": ("get", "/api/v1/queues", [200, 200, 200, D, D]),
}
BODIES = {"create a tenant": {"name": "Initech", "slug": "initech"}, "spawn": {}, "trigger a job": {},
          "change a job": {"description": "changed"}}


@pytest.fixture
def objects():
    tenant = make_tenant("acme")
    workflow = make_workflow(tenant)
    make_version(workflow, "1.0.0", activate=True)
    version = make_version(workflow, "2.0.0", activate=True)
    execution = Execution.objects.create(tenant=tenant, workflow=workflow, version=version, runtime="process",
                                         timeout_sec=60)
    job = make_job(name="web", tenant=tenant)
    build = build_trigger(job=job, trigger="api")
    drone, drone_client = make_drone("matrix-drone")
    _, execution_token = api_token_issue(scope="execution", tenant=tenant, subject_type="execution",
                                         subject_id=str(execution.pk))
    execution_client = APIClient()
    execution_client.credentials(HTTP_AUTHORIZATION=f"Bearer {execution_token}")
    clients = {"admin": token_client("admin"), "engine": token_client("engine", tenant),
               "read": token_client("read", tenant), "drone": drone_client, "execution": execution_client}
    values = {"workflow": workflow.pk, "execution": execution.pk, "job": job.pk, "build": build.pk,
              "bundle": version.bundle.sha256}
    return clients, values


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_permission_matrix(objects, name):
    clients, values = objects
    method, template, expected = MATRIX[name]
    path = template.format(**values)
    got = {}
    for scope in SCOPES:
        with transaction.atomic():  # each scope meets the same rows
            kwargs = {"data": BODIES[name], "format": "json"} if name in BODIES else {}
            response = getattr(clients[scope], method)(path, **kwargs)
            transaction.set_rollback(True)
        got[scope] = response.status_code
        if response.status_code == D:
            assert response.json()["error"] == "permission_denied", (scope, response.content)
    assert got == dict(zip(SCOPES, expected))


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/builds", "/api/v1/tenants/acme/jobs",
                                  "/api/v1/builds?state=pending,assigned&job=web", "/api/v1/tenants"])
def test_lists_do_not_query_per_row(path):
    tenant = make_tenant("acme")
    client = token_client("engine", tenant)
    job = make_job(name="web", tenant=tenant)
    build_trigger(job=job, trigger="api")
    client.get(path)
    with CaptureQueriesContext(connection) as baseline:
        assert client.get(path).status_code == 200
    for index in range(10):
        build_trigger(job=make_job(name=f"web-{index}", tenant=tenant), trigger="api")
        build_trigger(job=job, trigger="api")
    with CaptureQueriesContext(connection) as grown:
        assert client.get(path).status_code == 200
    assert len(grown) == len(baseline), [query["sql"] for query in grown]
