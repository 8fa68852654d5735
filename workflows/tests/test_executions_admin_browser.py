"""The executions admin in a real Chromium: spawn from a workflow, watch the timeline, cancel, write-only secrets."""
from __future__ import annotations

import pytest

from workflows.tests.conftest import publish, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.live]

@pytest.fixture
def staff_login(live_system, django_user_model, browser_page):
    django_user_model.objects.create_superuser("operator", "op@example.com", "correct-horse-battery")
    browser_page.goto(f"{live_system.url}/admin/login/")
    browser_page.fill("#id_username", "operator")
    browser_page.fill("#id_password", "correct-horse-battery")
    browser_page.click("input[type=submit]")
    browser_page.wait_for_selector("#user-tools")
    return browser_page


def test_secret_write_only_spawn_timeline_output_and_cancel(live_system, tenant, admin_api, staff_login):
    from workflows.models import Execution, TenantSecret

    page = staff_login
    workflow = publish(admin_api, {"main.py": "import os\nprint('value:' + os.environ['PASSWORD_X'])\n"},
                       workflow="browsed")
    page.goto(f"{live_system.url}/admin/workflows/tenantsecret/add/")
    page.select_option("#id_tenant", label="acme")
    page.fill("#id_name", "PASSWORD_X")
    page.fill("#id_value", "write-only-value-123")
    page.select_option("#id_workflows_from", label=str(workflow))
    page.click("#id_workflows_add")
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")
    secret = TenantSecret.objects.get(name="PASSWORD_X")
    assert list(secret.workflows.all()) == [workflow]
    page.goto(f"{live_system.url}/admin/workflows/tenantsecret/{secret.pk}/change/")
    assert page.input_value("#id_value") == ""
    assert "write-only-value-123" not in page.content()

    page.goto(f"{live_system.url}/admin/workflows/workflow/")
    page.check(f"input[name=_selected_action][value='{workflow.pk}']")
    page.select_option("select[name=action]", "spawn_executions")
    page.click("button[name=index]")
    page.wait_for_selector("text=spawned")
    execution = Execution.objects.get(workflow=workflow)
    # Opened at once, never reloaded: the timeline, the output and the status follow the execution live.
    page.goto(f"{live_system.url}/admin/workflows/execution/{execution.pk}/change/")
    assert page.text_content("h2") == f"execution {execution.pk} of acme/browsed"
    assert page.query_selector("input[name=_save]") is None and page.query_selector(".deletelink") is None
    page.wait_for_function("() => document.getElementById('execution-timeline').innerText.includes('exited')",
                           timeout=45_000)
    page.wait_for_function("() => document.getElementById('execution-status').textContent === 'succeeded'")
    assert page.evaluate("SwarmLive.swapped") >= 1
    timeline = page.inner_text("#execution-timeline")
    for stage in ("spawn_requested", "metadata_served", "bundle_verified", "started", "exited"):
        assert stage in timeline
    assert page.inner_text("#execution-output").strip() == "value:********"
    assert "write-only-value-123" not in page.content()
    page.goto(f"{live_system.url}/admin/workflows/execution/")
    assert "succeeded" in page.inner_text("#result_list")

    # One test, not two: the session's live server caches ContentType ids, which a
    # second transactional flush would renumber under it (admin log entries then fail).
    workflow = publish(admin_api, {"main.py": "import time\nprint('up', flush=True)\ntime.sleep(120)\n"},
                       workflow="cancelme")
    from swarm.core.principals import system_principal
    from workflows.services import execution_spawn

    execution = execution_spawn(principal=system_principal("test"), workflow=workflow)
    wait_for(lambda: Execution.objects.get(pk=execution.pk).status == "running", timeout=45, message="running")
    page.goto(f"{live_system.url}/admin/workflows/execution/")
    page.check(f"input[name=_selected_action][value='{execution.pk}']")
    page.select_option("select[name=action]", "cancel_executions")
    page.click("button[name=index]")
    page.wait_for_selector(f"text=Execution {execution.pk}: cancelled.")
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert execution.events.filter(type="cancel_requested").exists()
