"""Fixtures for execution tests: live server + real Celery worker + real `swarm-agent boot` processes."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import make_bundle, upload


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def live_system(live_url, celery_worker_process, subprocess_environment):
    """The real server and worker; exposes where the process runtime keeps its cache."""

    class LiveSystem:
        url = live_url
        worker = celery_worker_process
        cache_dir = Path(subprocess_environment["SWARM_VAR_DIR"]) / "cache"

        def api(self, token: str) -> httpx.Client:
            return httpx.Client(base_url=f"{live_url}/api/v1", headers={"Authorization": f"Bearer {token}"},
                                timeout=30)

    return LiveSystem()


@pytest.fixture(scope="session")
def microvm_image():
    """The microVM image for this checkout (built here if `make microvm-image` did not run; cached by its inputs)."""
    from django.conf import settings

    from swarm_agent.microvm.image import build_image

    return build_image(settings.SWARM_MICROVM_IMAGE_DIR, log=lambda line: None)


@pytest.fixture
def engine_token(tenant) -> str:
    from swarm.core.services import api_token_issue

    return api_token_issue(scope="engine", tenant=tenant, name="live-engine")[1]


def publish(admin_api, files: dict, *, tenant: str = "acme", workflow: str = "hello", version: str = "1.0.0",
            **workflow_fields):
    """Upload a bundle as the active version and set workflow fields; returns the Workflow row."""
    from workflows.models import Workflow

    response = upload(admin_api, make_bundle(files), tenant=tenant, workflow=workflow, version=version)
    assert response.status_code in (200, 201), response.content
    row = Workflow.objects.get(tenant__slug=tenant, slug=workflow)
    if workflow_fields:
        Workflow.objects.filter(pk=row.pk).update(**workflow_fields)
        row.refresh_from_db()
    return row


def events_of(client: httpx.Client, execution_id: int) -> list[dict]:
    response = client.get(f"/executions/{execution_id}/events")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def wait_finished(client: httpx.Client, execution_id: int, timeout: float = 45.0) -> dict:
    def finished():
        body = client.get(f"/executions/{execution_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled", "timed_out") else None

    return wait_for(finished, timeout=timeout, message=f"execution {execution_id} to finish")
