"""The project's structural rules, applied to the deployments app (which the shared rule tests do not list yet).

* public service functions take keyword arguments only (STYLE.md rule 1);
* no module-level import cycle runs through deployments;
* the dependency direction: deployments uses bundles, workflows, builds, swarm — none of them uses deployments.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from swarm.core.tests import test_import_cycles as cycles
from swarm.core.tests.test_service_signatures import positional_parameters

ROOT = Path(__file__).resolve().parents[2]


def test_public_service_functions_are_keyword_only():
    offenders = positional_parameters(ROOT / "deployments" / "services.py")
    assert not offenders, offenders


@pytest.fixture
def graph_with_deployments(monkeypatch):
    monkeypatch.setattr(cycles, "PACKAGES", (*cycles.PACKAGES, "deployments"))
    cycles.project_modules.cache_clear()
    cycles.import_graph.cache_clear()
    yield cycles.import_graph()
    cycles.project_modules.cache_clear()
    cycles.import_graph.cache_clear()


def test_no_import_cycles_through_deployments(graph_with_deployments):
    found = [cycle for cycle in cycles.find_cycles(graph_with_deployments) if any(
        module.startswith("deployments") for module in cycle)]
    assert not found, "\n".join(" → ".join(cycle) for cycle in found)
    assert "deployments.graph" in graph_with_deployments["deployments.analysis"]


def test_no_other_app_imports_deployments():
    offenders = []
    for app in ("bundles", "workflows", "drones", "builds", "swarm", "agent"):
        for path in (ROOT / app).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(name == "deployments" or name.startswith("deployments.") for name in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
