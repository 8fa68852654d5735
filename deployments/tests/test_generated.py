"""The generated catalog of the benchmark: its size, every file valid, depth 8, dependencies shared."""
from __future__ import annotations

from collections import Counter

import pytest

from deployments.analysis import analyze
from deployments.catalog import parse_tree, tree_from_files
from deployments.catalog.generate import generated_catalog
from deployments.lookup import MemoryLookup

pytestmark = pytest.mark.django_db


def test_the_generated_catalog_is_large_valid_deep_and_shared():
    generated = generated_catalog(scenarios=1800, resources=200, depth=8)
    assert len(generated.files) == 2000
    assert generated_catalog().files == generated.files  # same seed, same bytes
    tree = tree_from_files(generated.files)
    entries, problems = parse_tree(tree)
    assert [problem for problem in problems if problem.severity == "error"] == []
    analysis = analyze(MemoryLookup(entries, snapshot_sha256=tree.sha256), generated.deepest)
    assert analysis["max_depth"] == 8
    assert len(analysis["nodes"]) > 100
    dependents = Counter(edge["to"] for edge in analysis["edges"])
    assert max(dependents.values()) > 10  # shared dependencies: counted once in the nodes
    assert len({node["key"] for node in analysis["nodes"]}) == len(analysis["nodes"])
