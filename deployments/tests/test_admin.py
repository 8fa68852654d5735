"""The deployment manager's admin: snapshots with their entries, the analysis page with its DAG, profile history."""
from __future__ import annotations

import io
import re

import pytest

from deployments import services
from deployments.dag_svg import dag_svg
from deployments.tests.conftest import SAMPLE_CATALOG, catalog, scenario_file, tarball

pytestmark = pytest.mark.django_db


@pytest.fixture
def snapshot(tenant):
    return services.catalog_import_directory(path=SAMPLE_CATALOG, actor="test", tenant=tenant).snapshot


def test_the_snapshot_page_is_read_only_and_links_each_scenario_to_its_analysis(admin_client_, snapshot):
    page = admin_client_.get(f"/admin/deployments/catalogsnapshot/{snapshot.pk}/change/").content.decode()
    assert snapshot.sha256 in page and 'name="_save"' not in page
    assert f"/admin/deployments/catalogsnapshot/{snapshot.pk}/analysis/picker-wheel/" in page
    assert admin_client_.get("/admin/deployments/catalogsnapshot/add/").status_code == 403


def test_the_analysis_page_draws_the_dag_and_explains_fitness_per_tier(admin_client_, snapshot):
    response = admin_client_.get(f"/admin/deployments/catalogsnapshot/{snapshot.pk}/analysis/picker-wheel/"
                                 "?tier=desktop")
    page = response.content.decode()
    assert response.status_code == 200
    keys = set(re.findall(r'class="dag-node [^"]*" data-key="([^"]+)"', page))
    assert {"scenario:picker-wheel", "scenario:notification-hub", "resource:postgres", "resource:ollama"} <= keys
    assert 'class="dag-node dag-blocking" data-key="resource:postgres"' in page
    assert "desktop: 0.20, not deployable — blocked by resource:postgres" in page
    assert "postgres → sqlite: desktop +0.70 (unblocks)" in page
    assert "<script" not in page.split('id="dag"')[1].split("</div>")[0]


def test_a_cycle_is_shown_on_the_analysis_page(admin_client_, tenant):
    files = catalog(scenario_file("a", scenarios={"b": {}}), scenario_file("b", scenarios={"a": {}}))
    cyclic = services.catalog_import_tarball(fileobj=io.BytesIO(tarball(files)), actor="t", tenant=tenant).snapshot
    page = admin_client_.get(f"/admin/deployments/catalogsnapshot/{cyclic.pk}/analysis/a/").content.decode()
    assert "dependency_cycle" in page and "scenario:a → scenario:b → scenario:a" in page


def test_profile_history_shows_each_versions_diff_and_the_secrets_plan(admin_client_, snapshot, tenant):
    first = services.profile_create(tenant=tenant, slug="wheel", snapshot=snapshot, scenario="picker-wheel",
                                    tier="server", actor="alice")
    services.profile_swap(profile=first.profile, original="postgres", replacement="sqlite", actor="bob")
    page = admin_client_.get(f"/admin/deployments/deploymentprofile/{first.profile_id}/versions/").content.decode()
    assert "v2" in page and "add /swaps/postgres" in page and "bob" in page
    assert "PICKER_SESSION_KEY" in page and "bundle-safe" in page
    change = admin_client_.get(f"/admin/deployments/deploymentprofile/{first.profile_id}/change/").content.decode()
    assert 'name="_save"' not in change and "history, diffs and secrets plan" in change


def test_an_infrastructure_secret_is_shown_with_the_swap_that_removes_it(admin_client_, snapshot, tenant):
    first = services.profile_create(tenant=tenant, slug="wheel", snapshot=snapshot, scenario="picker-wheel",
                                    tier="server", actor="alice")
    page = admin_client_.get(f"/admin/deployments/deploymentprofile/{first.profile_id}/versions/").content.decode()
    assert "not bundle-safe" in page and "POSTGRES_PASSWORD" in page and "postgres → sqlite" in page


def test_the_svg_escapes_what_a_catalog_says():
    analysis = {"root": "scenario:<x>", "nodes": [{"key": "scenario:<x>", "depth": 0, "required": True,
                                                    "version": '"><script>', "valid": True}],
                "edges": [], "missing": [], "fitness": {}}
    svg = dag_svg(analysis)
    assert "<script>" not in svg and "&lt;x&gt;" in svg
