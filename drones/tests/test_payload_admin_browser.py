"""The payload admin in a real Chromium: a rollout page updated live over its WebSocket, the matrix, drift."""
from __future__ import annotations

import os

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from drones.models import Drone
from drones.payloads.engine import rollout_advance
from drones.payloads.models import DronePayloadState, PayloadVersion, RolloutTarget
from drones.tests.payload_support import live_drones, push_payload
from drones.tests.test_admin_browser import _login

pytestmark = [pytest.mark.browser, pytest.mark.live]

SCREENSHOTS = os.environ.get("SWARM_SCREENSHOT_DIR")


def test_rollout_page_updates_live_and_matrix_and_drift_show_the_fleet(live_url, browser_page, admin_api, tmp_path):
    version = PayloadVersion.objects.get(pk=push_payload(admin_api).json()["id"])
    drones = live_drones(3, prefix="browser-")
    # These drones never heartbeat; a session worker woken by the reports must still see them as up.
    Drone.objects.filter(name__startswith="browser-").update(last_heartbeat_at=timezone.now() + timedelta(hours=1))
    answer = admin_api.post("/api/v1/rollouts", {"payload_type": "toolchain", "version": "1.0.0",
                                                  "target": {"all": True}, "max_parallel": 2, "canary": 1,
                                                  "min_healthy_time": 0}, format="json")
    rollout_id = answer.json()["id"]
    rollout_advance(rollout_id=rollout_id)
    canary = RolloutTarget.objects.get(rollout_id=rollout_id, is_canary=True)
    token = {drone.pk: client.token for drone, client in drones}[canary.drone_id]

    page = browser_page
    _login(page, live_url)
    page.goto(f"{live_url}/admin/drones/rollout/{rollout_id}/change/")
    page.wait_for_function("() => document.getElementById('rollout-connection').textContent === 'live'")
    assert page.locator("#rollout-state").inner_text() == "running"
    assert page.locator("#rollout-promote").is_disabled() and page.locator("#rollout-pause").is_enabled()

    # The agent reports over HTTP to the live server; the page changes without a reload (pushed).
    report = httpx.post(f"{live_url}/api/v1/payloads/agent/report", headers={"Authorization": f"Bearer {token}"},
                        json={"target_id": canary.pk, "states": [{"state": "downloading"}, {"state": "installing"}]},
                        timeout=30)
    assert report.status_code == 204, report.text
    row = page.locator(f"#target-{canary.pk} .target-state")
    row.locator("text=installing").wait_for()
    assert "rgb(9, 105, 218)" in row.locator("span").evaluate("el => getComputedStyle(el).backgroundColor")
    httpx.post(f"{live_url}/api/v1/payloads/agent/report", headers={"Authorization": f"Bearer {token}"},
               json={"target_id": canary.pk, "states": [{"state": "succeeded"}],
                     "current_sha256": version.sha256}, timeout=30)
    row.locator("text=succeeded").wait_for()
    page.wait_for_function("() => document.getElementById('rollout-progress-text').textContent.startsWith('1/3')")
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, "payload-rollout.png"), full_page=True)

    # Pause through the button: the same service as the API.
    page.click("#rollout-pause")
    page.wait_for_selector(".messagelist")
    assert "pause accepted" in page.locator(".messagelist").inner_text()
    assert page.locator("#rollout-resume").is_enabled()

    # Drift on one drone: the matrix cell, the drone list badge and the drift view.
    other = next(drone for drone, _ in drones if drone.pk != canary.drone_id)
    DronePayloadState.objects.create(drone=other, payload_type=version.payload_type, desired_version=version,
                                     reported_sha256="e" * 64, drifted=True, drift_detail="reports eeee…")
    page.goto(f"{live_url}/admin/drones/rollout/matrix/")
    assert page.locator("td.matrix-deploying").count() == 2  # the two not done yet (the canary succeeded)
    assert admin_api.post(f"/api/v1/rollouts/{rollout_id}/abort").status_code == 202
    page.goto(f"{live_url}/admin/drones/rollout/matrix/")
    assert page.locator("td.matrix-drifted").count() == 1
    assert page.locator("td.matrix-in_sync").count() == 1  # the canary, which finished before the abort
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, "payload-matrix.png"), full_page=True)
    page.goto(f"{live_url}/admin/drones/drone/")
    assert page.locator("tr", has_text=other.name).locator(".payload-drift-badge").inner_text() == "drift: 1"
    page.goto(f"{live_url}/admin/drones/rollout/drift/")
    assert page.locator("tr.drift-row").count() == 1 and other.name in page.locator("tr.drift-row").inner_text()
    assert Drone.objects.count() == 3
