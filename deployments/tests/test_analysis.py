"""The analyzer: the DAG, cycles, missing and broken dependencies, version ranges, aggregate requirements."""
from __future__ import annotations

import json

import pytest

from deployments.analysis import analyze
from deployments.errors import DependencyCycle, InvalidSwap, UnknownScenario
from deployments.tests.conftest import catalog, lookup_of, resource_file, sample_files, scenario_file

pytestmark = pytest.mark.django_db


def keys(analysis) -> list[str]:
    return [node["key"] for node in analysis["nodes"]]


def fitness_of(analysis, tier: str, key: str) -> dict:
    return next(d for d in analysis["fitness"][tier]["dependencies"] if d["key"] == key)


@pytest.fixture
def sample():
    return lookup_of(sample_files())


def test_the_dag_of_the_sample_scenario_has_each_dependency_once_dependencies_first(sample):
    analysis = analyze(sample, "picker-wheel")
    assert keys(analysis) == ["resource:ollama", "resource:postgres", "resource:openrouter",
                              "scenario:notification-hub", "scenario:picker-wheel"]
    assert analysis["max_depth"] == 2
    assert sorted((e["from"], e["to"]) for e in analysis["edges"] if e["to"] == "resource:postgres") == [
        ("scenario:notification-hub", "resource:postgres"), ("scenario:picker-wheel", "resource:postgres")]
    assert analysis["disabled"] == [{"from": "scenario:picker-wheel", "to": "resource:redis", "required": False}]
    required = {node["key"]: node["required"] for node in analysis["nodes"]}
    assert required == {"resource:postgres": True, "resource:openrouter": False, "scenario:notification-hub": True,
                        "resource:ollama": False, "scenario:picker-wheel": True}
    assert json.loads(json.dumps(analysis)) == analysis  # JSON-ready, as the cache and the API need it


def test_aggregate_requirements_count_a_shared_dependency_once_and_optional_ones_apart(sample):
    requirements = analyze(sample, "picker-wheel")["requirements"]
    # picker-wheel's own 192 MB + notification-hub's default 256 MB + postgres's default 512 MB (once, not twice)
    assert requirements["required"] == {"ram_mb": 960, "disk_mb": 1430, "cpu_cores": 2, "gpu": False,
                                        "gpu_vram_mb": 0}
    assert requirements["optional"]["ram_mb"] == 8192  # ollama (catalog); openrouter is remote: 0
    assert requirements["total"]["ram_mb"] == 960 + 8192
    assert requirements["complete"] is True and requirements["unknown"] == []


def test_a_catalog_overrides_the_default_requirements_and_unknown_ones_are_named():
    files = catalog(scenario_file("app", resources={"postgres": {}, "mystery": {}}, requirements={"ram_mb": 100}),
                    resource_file("postgres", requirements={"ram_mb": 2048, "disk_mb": 10, "cpu_cores": 2}),
                    resource_file("mystery"))
    analysis = analyze(lookup_of(files), "app")
    nodes = {node["key"]: node for node in analysis["nodes"]}
    assert nodes["resource:postgres"]["requirements"]["ram_mb"] == 2048
    assert nodes["resource:postgres"]["requirements_source"] == "catalog"
    assert nodes["resource:mystery"]["requirements_source"] == "unknown"
    assert analysis["requirements"]["required"]["ram_mb"] == 2148
    assert analysis["requirements"]["unknown"] == ["resource:mystery"]
    assert analysis["requirements"]["complete"] is False


def test_default_requirements_of_common_resources():
    files = catalog(scenario_file("app", resources={"redis": {}, "qdrant": {}, "ollama": {}, "n8n": {}, "minio": {}}),
                    *(resource_file(name) for name in ("redis", "qdrant", "ollama", "n8n", "minio")))
    nodes = {node["name"]: node for node in analyze(lookup_of(files), "app")["nodes"]}
    assert {name: nodes[name]["requirements"]["ram_mb"] for name in ("redis", "qdrant", "ollama", "n8n", "minio")} == {
        "redis": 256, "qdrant": 1024, "ollama": 8192, "n8n": 512, "minio": 512}
    assert all(nodes[name]["requirements_source"] == "default" for name in ("redis", "ollama"))


def test_a_cycle_is_refused_naming_its_members_in_order():
    files = catalog(scenario_file("a", scenarios={"b": {}}), scenario_file("b", scenarios={"c": {}}),
                    scenario_file("c", scenarios={"a": {}}), scenario_file("top", scenarios={"a": {}}))
    with pytest.raises(DependencyCycle) as refused:
        analyze(lookup_of(files), "top")
    assert refused.value.extra["cycle"] == ["scenario:a", "scenario:b", "scenario:c", "scenario:a"]
    assert "scenario:a → scenario:b → scenario:c → scenario:a" in refused.value.detail
    assert refused.value.status_code == 422


def test_a_cycle_through_resources_and_a_self_loop():
    files = catalog(scenario_file("app", resources={"r1": {}}), resource_file("r1", dependencies=["r2"]),
                    resource_file("r2", orchestration={"dependencies": ["r1"]}))
    with pytest.raises(DependencyCycle) as refused:
        analyze(lookup_of(files), "app")
    assert refused.value.extra["cycle"] == ["resource:r1", "resource:r2", "resource:r1"]
    with pytest.raises(DependencyCycle) as refused:
        analyze(lookup_of(catalog(scenario_file("me", scenarios={"me": {}}))), "me")
    assert refused.value.extra["cycle"] == ["scenario:me", "scenario:me"]


def test_missing_dependencies_are_named_with_who_needs_them():
    files = catalog(scenario_file("app", resources={"ghost": {"required": True}, "maybe": {"required": False}},
                                  scenarios={"lib": {}}),
                    scenario_file("lib", resources={"ghost": {}}))
    analysis = analyze(lookup_of(files), "app")
    assert analysis["missing"] == [
        {"key": "resource:ghost", "needed_by": ["scenario:app", "scenario:lib"], "required": True},
        {"key": "resource:maybe", "needed_by": ["scenario:app"], "required": False}]
    for tier in ("local", "desktop"):
        ghost = fitness_of(analysis, tier, "resource:ghost")
        assert (ghost["supported"], ghost["score"], ghost["blocking"], ghost["reason"]) == (
            False, 0.0, True, "not in the catalog")
        assert fitness_of(analysis, tier, "resource:maybe")["blocking"] is False
        assert analysis["fitness"][tier]["deployable"] is False
        assert "resource:ghost" in analysis["fitness"][tier]["blocking"]


def test_a_dependency_on_a_broken_file_says_what_is_broken():
    files = catalog(scenario_file("app", resources={"db": {}}),
                    ("resources/db/resource.json", b'{"name": "db", "dependencies": "none"}'))
    analysis = analyze(lookup_of(files), "app")
    assert analysis["missing"] == []
    [invalid] = analysis["invalid"]
    assert invalid["key"] == "resource:db" and invalid["problems"][0]["pointer"] == "/dependencies"
    db = fitness_of(analysis, "server", "resource:db")
    assert db["blocking"] and db["reason"].startswith("resources/db/resource.json#/dependencies is invalid")


@pytest.mark.parametrize(("version", "spec", "status"), [
    ("1.4.0", {"versionRange": "^1.0.0"}, "ok"),
    ("1.4.0", {"versionRange": ">=1.0.0 <2.0.0 || >=3"}, "ok"),
    ("1.4.0", {"versionRange": "1.0.0 - 1.5.0"}, "ok"),
    ("1.4.0", {"versionRange": "~1.3"}, "unsatisfied"),
    ("1.4.0", {"versionRange": "^2.0.0"}, "unsatisfied"),
    ("1.4.0", {"version": "1.4.0"}, "ok"),
    ("1.4.0", {"version": "1.3.0"}, "unsatisfied"),
    ("1.4.0", {"version": "1.0.0", "versionRange": ">=1.0.0"}, "ok"),  # Vrooli writes both: the range decides
    ("1.4.0", {"versionRange": "not a range!"}, "invalid_range"),
    ("", {"versionRange": "^1.0.0"}, "unknown_version"),
])
def test_version_ranges_are_checked_as_npm_writes_them(version, spec, status):
    files = catalog(scenario_file("app", scenarios={"lib": spec}), scenario_file("lib", version=version))
    analysis = analyze(lookup_of(files), "app")
    [edge] = analysis["edges"]
    assert edge["version_check"]["status"] == status
    lib = fitness_of(analysis, "local", "scenario:lib")
    if status in ("unsatisfied", "invalid_range"):
        assert analysis["version_problems"][0]["status"] == status
        assert lib["blocking"] and "required by scenario:app" in lib["reason"]
    else:
        assert analysis["version_problems"] == [] and not lib["blocking"]


def test_an_unsatisfiable_range_between_two_dependents():
    files = catalog(scenario_file("app", scenarios={"a": {}, "b": {}}),
                    scenario_file("a", scenarios={"lib": {"versionRange": "^1.0.0"}}),
                    scenario_file("b", scenarios={"lib": {"versionRange": "^2.0.0"}}),
                    scenario_file("lib", version="1.5.0"))
    analysis = analyze(lookup_of(files), "app")
    assert [(p["from"], p["status"]) for p in analysis["version_problems"]] == [("scenario:b", "unsatisfied")]
    assert "1.5.0 does not satisfy ^2.0.0" in analysis["version_problems"][0]["detail"]
    assert analysis["fitness"]["server"]["deployable"] is False


def test_swaps_apply_everywhere_in_the_graph(sample):
    analysis = analyze(sample, "picker-wheel", {"postgres": "sqlite"})
    assert "resource:postgres" not in keys(analysis) and "resource:sqlite" in keys(analysis)
    swapped = [edge for edge in analysis["edges"] if edge["swapped_from"]]
    assert {(e["from"], e["to"], e["swapped_from"]) for e in swapped} == {
        ("scenario:picker-wheel", "resource:sqlite", "resource:postgres"),
        ("scenario:notification-hub", "resource:sqlite", "resource:postgres")}
    assert analysis["swaps"] == {"postgres": "sqlite"}


def test_a_swap_to_a_resource_that_does_not_exist(sample):
    with pytest.raises(InvalidSwap) as refused:
        analyze(sample, "picker-wheel", {"postgres": "mariadb"})
    assert refused.value.code == "unknown_swap_target"
    assert "mariadb" in refused.value.detail and refused.value.field == "swaps/postgres"


@pytest.mark.parametrize(("swaps", "code"), [
    ({"mysql": "sqlite"}, "swap_not_applicable"),
    ({"postgres": "postgres"}, "invalid_swap"),
    ({"postgres": "sqlite", "sqlite": "redis"}, "invalid_swap"),
    ({"picker-wheel": "notification-hub"}, "invalid_swap"),
    ({"postgres": ""}, "invalid_swap"),
])
def test_swaps_that_cannot_apply(sample, swaps, code):
    with pytest.raises(InvalidSwap) as refused:
        analyze(sample, "picker-wheel", swaps)
    assert refused.value.code == code


def test_an_unknown_scenario(sample):
    with pytest.raises(UnknownScenario):
        analyze(sample, "no-such-scenario")
