"""The admin as a new operator meets it: useful links, titles that name things, no Save/Delete on records nobody
edits, no "Add drone", readable JSON, times with seconds and ages, the consoles behind their permissions."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from builds.services import build_trigger
from builds.tests.factories import make_job
from drones.models import Drone, EscalationEvent, TerminalSession
from drones.tests.conftest import register_drone
from swarm.core.models import AuditLogEntry
from workflows.models import Execution
from workflows.tests.factories import make_tenant, make_version, make_workflow

pytestmark = pytest.mark.django_db

SECONDS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture
def operator():
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("operator", "op@example.test", "pw-pw-pw-pw"))
    return client


def _staff(*codenames) -> Client:
    user = get_user_model().objects.create_user("limited", "l@example.test", "pw-pw-pw-pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def _read_only(page: str) -> None:
    assert 'name="_save"' not in page and 'name="_continue"' not in page, "no Save on a record nobody edits"
    assert "deletelink" not in page, "no Delete either"


def test_the_index_leads_to_the_consoles_and_the_root_to_the_admin(operator):
    page = operator.get("/admin/").content.decode()
    assert "View site" not in page
    for link in ("/admin/drones/drone/topology/", "/admin/logs/", "/api/docs/"):
        assert f'href="{link}"' in page
    for panel in ('id="drones-fleet-cards"', 'id="ci-dashboard"', 'id="executions-summary"'):
        assert panel in page
    assert 'data-topics="drones,builds,executions"' in page, "the dashboard is live"
    assert operator.get("/").headers["Location"] == "/admin/"


def test_records_nobody_edits_have_view_pages_that_name_them(operator):
    tenant = make_tenant("acme")
    workflow = make_workflow(tenant, "hello")
    version = make_version(workflow, "1.0.0", activate=True, metadata={"commit": "abc123", "ci": True})
    execution = Execution.objects.create(tenant=tenant, workflow=workflow, version=version, runtime="process",
                                         timeout_sec=60, env={"GREETING": "hi"})
    build = build_trigger(job=make_job(name="product-job"), trigger="manual", params={"FLAVOR": "fast"})
    drone, _ = register_drone("product-drone", labels=["linux", "gpu"])
    event = EscalationEvent.objects.create(drone=drone, level=1, action="restart_service", result="sent")
    session = TerminalSession.objects.create(drone=drone, drone_name=drone.name, username="operator")
    entry = AuditLogEntry.objects.create(actor="user:operator", action="terminal.open", object_type="drones.terminal",
                                         object_id=str(session.pk), detail={"drone": drone.name})

    page = operator.get(f"/admin/workflows/execution/{execution.pk}/change/").content.decode()
    assert f"<h2>execution {execution.pk} of acme/hello</h2>" in page, "the title names the workflow"
    assert "swarm-kv" in page and "GREETING" in page, "env as a key/value table"
    _read_only(page)
    page = operator.get(f"/admin/builds/build/{build.pk}/change/").content.decode()
    _read_only(page)
    assert page.index("field-state_cell") < page.index("field-branch") < page.index("Scheduling"), \
        "the important fields come first"
    assert "FLAVOR" in page and '{"FLAVOR"' not in page, "params readable, not a JSON dump"
    assert SECONDS.search(page) and " ago" in page
    for url in (f"/admin/workflows/workflowversion/{version.pk}/change/", f"/admin/drones/escalationevent/{event.pk}/change/",
                f"/admin/drones/terminalsession/{session.pk}/change/",
                f"/admin/core/auditlogentry/{entry.pk}/change/"):
        response = operator.get(url)
        assert response.status_code == 200, url
        _read_only(response.content.decode())
    assert "commit" in operator.get(f"/admin/workflows/workflowversion/{version.pk}/change/").content.decode()


def test_drones_register_themselves_and_their_page_reads_well(operator):
    drone, _ = register_drone("product-drone-2", labels=["linux", "gpu"])
    Drone.objects.filter(pk=drone.pk).update(metrics={"cpu_percent": 12.5, "load_1": 0.3})
    listing = operator.get("/admin/drones/drone/").content.decode()
    assert 'href="/admin/drones/drone/add/"' not in listing and "Add drone" not in listing
    assert operator.get("/admin/drones/drone/add/").status_code == 403
    assert 'class="swarm-chip">gpu<' in listing
    page = operator.get(f"/admin/drones/drone/{drone.pk}/change/").content.decode()
    assert "cpu_percent" in page and "swarm-kv" in page
    for console in ("open-terminal", "open-syslog"):
        assert f'id="{console}"' in page


def test_the_consoles_ask_for_their_own_permissions(operator):
    drone, _ = register_drone("guarded")
    for url in ("/admin/drones/drone/topology/", f"/admin/drones/drone/{drone.pk}/terminal/",
                f"/admin/drones/drone/{drone.pk}/syslog/", "/admin/logs/"):
        assert operator.get(url).status_code == 200, url
    viewer = _staff("view_drone")
    assert viewer.get("/admin/drones/drone/topology/").status_code == 200
    page = viewer.get(f"/admin/drones/drone/{drone.pk}/change/").content.decode()
    assert 'id="open-terminal"' not in page
    for url in (f"/admin/drones/drone/{drone.pk}/terminal/", f"/admin/drones/drone/{drone.pk}/syslog/", "/admin/logs/"):
        assert viewer.get(url).status_code == 403, url
    assert Client().get("/admin/drones/drone/topology/").status_code == 302, "anonymous: to the login page"
