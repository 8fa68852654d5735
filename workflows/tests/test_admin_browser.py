"""The registry admin in a real Chromium against a real uvicorn server: token → push → activate → roll back."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import httpx
import pytest

from conftest import make_bundle

pytestmark = [pytest.mark.browser, pytest.mark.live]

SCREENSHOT_DIR = Path(os.environ.get("SWARM_SCREENSHOT_DIR", "/tmp"))
OPERATOR = ("operator", "operator-pass-1")


@pytest.fixture
def operator_and_tenant(live_url, django_user_model):
    """A superuser and a tenant, committed so the live server sees them."""
    from tenancy.models import Tenant

    django_user_model.objects.create_superuser(OPERATOR[0], "ops@example.com", OPERATOR[1])
    return Tenant.objects.create(name="Acme", slug="acme")


@pytest.fixture
def page(browser_page, operator_and_tenant):
    """A Chromium page, with the operator and tenant already committed."""
    return browser_page


def push(live_url: str, token: str, version: str) -> dict:
    """Upload a fresh bundle over HTTP the way an engine would."""
    files = {"bundle": ("bundle.tar.gz", io.BytesIO(make_bundle()), "application/gzip")}
    data = {"tenant": "acme", "workflow": "hello", "version": version}
    response = httpx.post(f"{live_url}/api/v1/bundles", data=data, files=files,
                          headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()


def active_version(live_url: str, token: str, workflow_id: int) -> str:
    response = httpx.get(f"{live_url}/api/v1/workflows/{workflow_id}/active",
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["version"]


def test_operator_issues_token_then_activates_and_rolls_back(live_url, page):
    page.goto(f"{live_url}/admin/login/?next=/admin/")
    page.fill("#id_username", OPERATOR[0])
    page.fill("#id_password", OPERATOR[1])
    page.click("input[type=submit]")
    page.wait_for_selector("#swarm-overview-panel")

    # Create an engine token bound to acme; the admin shows its plaintext once.
    page.goto(f"{live_url}/admin/core/apitoken/add/")
    page.fill("#id_name", "ci")
    page.select_option("#id_scope", "engine")
    page.select_option("#id_tenant", label="acme")
    page.click("input[name=_save]")
    token = page.inner_text("#new-token-plaintext").strip()
    assert token.startswith("swm_")
    assert token not in page.inner_text("#result_list")  # the list itself shows the prefix only
    page.screenshot(path=str(SCREENSHOT_DIR / "swarm-admin-token-created.png"), full_page=True)

    first = push(live_url, token, "1.0.0")
    push(live_url, token, "1.1.0")
    third = push(live_url, token, "1.2.0")
    workflow_id = first["workflow_id"]
    assert active_version(live_url, token, workflow_id) == "1.0.0"

    page.goto(f"{live_url}/admin/workflows/workflow/{workflow_id}/change/")
    history = page.inner_text("#versions-group")
    for label in ("1.0.0", "1.1.0", "1.2.0"):
        assert label in history
    assert third["bundle_hash"][:12] in history
    assert page.locator("button.swarm-activate").count() == 2

    page.click('button.swarm-activate[data-version="1.2.0"]')
    page.wait_for_selector(".messagelist .success")
    assert "version 1.2.0 is now active" in page.inner_text(".messagelist")
    assert active_version(live_url, token, workflow_id) == "1.2.0"
    assert page.inner_text(".field-active_version .readonly").strip() == "1.2.0"

    page.click("#rollback-button")
    page.wait_for_selector(".messagelist .success")
    assert "rolled back to version 1.0.0" in page.inner_text(".messagelist")
    assert active_version(live_url, token, workflow_id) == "1.0.0"
    assert "rollback" in page.inner_text("#activations-group")
    page.screenshot(path=str(SCREENSHOT_DIR / "swarm-admin-workflow.png"), full_page=True)

    # The download link on the newest version's row fetches exactly the bundle it names.
    link = page.locator("#versions-group a.swarm-download").first.get_attribute("href")
    downloaded = httpx.get(link, timeout=30)
    assert downloaded.status_code == 200
    assert hashlib.sha256(downloaded.content).hexdigest() == third["bundle_hash"]

    page.goto(f"{live_url}/admin/workflows/workflowversion/{third['id']}/change/")
    assert third["bundle_hash"] in page.inner_text(".field-bundle_hash")
    assert page.locator("input[name=_save]").count() == 0  # versions are read-only
    page.screenshot(path=str(SCREENSHOT_DIR / "swarm-admin-version.png"), full_page=True)
    page.click('button.swarm-activate[data-version="1.2.0"]')  # the same button on the version's own page
    page.wait_for_selector(".messagelist .success")
    assert active_version(live_url, token, workflow_id) == "1.2.0"

    page.goto(f"{live_url}/admin/")
    recent = page.inner_text("#recent-activations").lower()
    assert "recent activations" in recent and "rollback → 1.0.0 (was 1.2.0)" in recent
    page.screenshot(path=str(SCREENSHOT_DIR / "swarm-admin-index.png"), full_page=True)
