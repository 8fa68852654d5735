"""The analysis page in a real Chromium: the DAG is an SVG drawn by the server, with a node for every dependency."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployments import services
from deployments.tests.conftest import SAMPLE_CATALOG
from drones.tests.test_admin_browser import _login

pytestmark = [pytest.mark.browser, pytest.mark.live]

#: Where the docs' screenshot is written when SWARM_SCREENSHOT_DIR is set (docs/ for the walkthrough).
SCREENSHOTS = os.environ.get("SWARM_SCREENSHOT_DIR")


def test_the_analysis_page_shows_the_dag_with_every_node_and_the_fitness(live_url, browser_page, tenant):
    snapshot = services.catalog_import_directory(path=SAMPLE_CATALOG, actor="test", tenant=tenant).snapshot
    page = browser_page
    _login(page, live_url)
    page.goto(f"{live_url}/admin/deployments/catalogsnapshot/{snapshot.pk}/change/")
    page.click("text=analyse picker-wheel")
    page.wait_for_selector("#dag svg")
    keys = page.eval_on_selector_all("#dag svg g.dag-node", "nodes => nodes.map(n => n.dataset.key)")
    assert {"scenario:picker-wheel", "scenario:notification-hub", "resource:postgres", "resource:ollama",
            "resource:openrouter"} <= set(keys)
    assert page.locator("#dag svg path.dag-edge").count() >= 4
    box = page.locator('#dag svg g.dag-node[data-key="resource:postgres"]').bounding_box()
    assert box and box["width"] > 100 and box["height"] > 30  # drawn, not merely present
    assert "dag-blocking" in page.get_attribute('#dag svg g.dag-node[data-key="resource:postgres"]', "class")
    assert "not deployable" in page.locator("#fitness .fitness-desktop").inner_text()
    page.click("#deployment-analysis >> text=server")
    page.wait_for_url("**?tier=server")
    assert "dag-blocking" not in page.get_attribute('#dag svg g.dag-node[data-key="resource:postgres"]', "class")
    if SCREENSHOTS:
        page.goto(f"{live_url}/admin/deployments/catalogsnapshot/{snapshot.pk}/analysis/picker-wheel/?tier=desktop")
        page.wait_for_selector("#dag svg")
        page.screenshot(path=str(Path(SCREENSHOTS) / "deployments-analysis.png"), full_page=True)
