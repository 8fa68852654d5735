"""The one scorer: precedence of statements, budgets, the blocking rule, the aggregate, swap suggestions."""
from __future__ import annotations

import pytest

from deployments.analysis import analyze
from deployments.fitness import aggregate, score_dependency
from deployments.requirements import Requirements
from deployments.tests.conftest import catalog, lookup_of, resource_file, sample_files, scenario_file
from deployments.tiers import TIERS

pytestmark = pytest.mark.django_db


def dependency(analysis, tier: str, key: str) -> dict:
    return next(d for d in analysis["fitness"][tier]["dependencies"] if d["key"] == key)


@pytest.fixture
def sample():
    return analyze(lookup_of(sample_files()), "picker-wheel")


def test_every_dependency_has_a_score_on_every_tier(sample):
    for tier in TIERS:
        entries = sample["fitness"][tier]["dependencies"]
        assert {entry["key"] for entry in entries} == {node["key"] for node in sample["nodes"]}
        for entry in entries:
            assert 0 <= entry["score"] <= 1 and isinstance(entry["supported"], bool)
            assert entry["reason"] and isinstance(entry["blocking"], bool)


def test_a_dependents_statement_wins_over_the_resources_own_and_the_defaults(sample):
    postgres = dependency(sample, "desktop", "resource:postgres")
    # picker-wheel says tier-2-desktop unsupported, 0.2 — over postgres's own "conditional" (0.75) and the default 0.3
    assert (postgres["score"], postgres["supported"], postgres["source"], postgres["declared_by"]) == (
        0.2, False, "declared", "scenario:picker-wheel")
    assert postgres["blocking"] is True
    assert postgres["reason"] == "Needs a PostgreSQL server; a desktop install has none"


def test_the_most_pessimistic_dependent_speaks_when_several_do():
    def says(score):
        return {"dependencies": {"resources": {"db": {"platform_support": {"desktop": {"fitness_score": score}}}}}}

    files = catalog(scenario_file("app", resources={"db": {}}, scenarios={"lib": {}}, tier_feasibility=says(0.9)),
                    scenario_file("lib", resources={"db": {}}, tier_feasibility=says(0.4)), resource_file("db"))
    db = dependency(analyze(lookup_of(files), "app"), "desktop", "resource:db")
    assert (db["score"], db["supported"], db["declared_by"]) == (0.4, False, "scenario:lib")


def test_own_statement_then_defaults_then_kind_then_unknown():
    files = catalog(
        scenario_file("app", resources={"own": {}, "redis": {}, "cloud": {}, "lib": {}, "plain": {}}),
        resource_file("own", deployment={"profiles": {"desktop": {"linux": {"support": "supported"},
                                                                  "windows": {"support": "unsupported"}}}}),
        resource_file("redis"), resource_file("cloud", driver="cloud-api"), resource_file("lib", runs_as="library"),
        resource_file("plain"))
    analysis = analyze(lookup_of(files), "app")
    summary = {key: (d["score"], d["source"]) for key in ("own", "redis", "cloud", "lib", "plain")
               for d in [dependency(analysis, "desktop", f"resource:{key}")]}
    assert summary == {"own": (0.5, "catalog"), "redis": (0.4, "default"), "cloud": (0.9, "catalog"),
                       "lib": (1.0, "catalog"), "plain": (0.6, "unknown")}
    assert "unsupported on windows" in dependency(analysis, "desktop", "resource:own")["reason"]
    assert "(unverified)" in dependency(analysis, "desktop", "resource:plain")["reason"]
    assert dependency(analysis, "mobile", "resource:plain")["score"] == 0.4


def test_a_dependency_larger_than_the_tier_is_unsupported_there():
    files = catalog(scenario_file("app", resources={"big": {}}),
                    resource_file("big", requirements={"ram_mb": 16384, "disk_mb": 100, "cpu_cores": 2}))
    analysis = analyze(lookup_of(files), "app")
    desktop = dependency(analysis, "desktop", "resource:big")
    assert (desktop["supported"], desktop["score"], desktop["source"]) == (False, 0.0, "budget")
    assert desktop["reason"].startswith("needs 16 GB RAM; one desktop install has 8 GB")
    assert dependency(analysis, "server", "resource:big")["supported"] is True


def test_a_gpu_dependency():
    files = catalog(scenario_file("app", resources={"gpu": {}}),
                    resource_file("gpu", requirements={"ram_mb": 1024, "gpu": {"required": True, "vram_mb": 4096}}))
    analysis = analyze(lookup_of(files), "app")
    assert dependency(analysis, "mobile", "resource:gpu")["supported"] is False
    desktop = dependency(analysis, "desktop", "resource:gpu")
    assert desktop["score"] == 0.5 and "needs a GPU" in desktop["reason"]
    assert dependency(analysis, "enterprise", "resource:gpu")["score"] == 0.8
    assert analysis["requirements"]["required"]["gpu"] is True
    assert analysis["requirements"]["required"]["gpu_vram_mb"] == 4096


def test_an_unsupported_optional_dependency_is_not_blocking_and_is_dropped(sample):
    ollama = dependency(sample, "mobile", "resource:ollama")
    assert ollama["supported"] is False and ollama["required"] is False and ollama["blocking"] is False
    assert "resource:ollama" in sample["fitness"]["mobile"]["dropped_optional"]
    assert "resource:ollama" not in sample["fitness"]["mobile"]["blocking"]


def test_the_tier_score_is_the_weakest_required_part(sample):
    desktop = sample["fitness"]["desktop"]
    assert desktop["score"] == 0.2 and desktop["weakest"] == "resource:postgres"
    assert desktop["deployable"] is False and desktop["blocking"] == ["resource:postgres"]
    server = sample["fitness"]["server"]
    assert server["deployable"] is True
    required = [d["score"] for d in server["dependencies"] if d["required"]]
    assert server["score"] == min(required)
    assert server["explanation"][0] == f"server: {server['score']:.2f}, deployable"
    assert any(line.startswith("requirements: needs 960 MB RAM") for line in server["explanation"])


def test_a_bundle_that_does_not_fit_the_tier_budget_is_blocked_by_the_budget():
    parts = {f"r{n}": {} for n in range(5)}
    files = catalog(scenario_file("app", resources=parts),
                    *(resource_file(name, requirements={"ram_mb": 1800}) for name in parts))
    desktop = analyze(lookup_of(files), "app")["fitness"]["desktop"]
    assert desktop["blocking"] == ["budget"] and desktop["deployable"] is False
    assert desktop["budget_factor"] == round(8192 / (5 * 1800 + 256), 3)
    assert desktop["score"] == min(0.6, desktop["budget_factor"])  # the parts are unverified on a desktop: 0.6
    assert "more than one desktop install has" in desktop["explanation"][-1]


def test_the_scorer_and_the_aggregate_directly():
    nothing = Requirements()
    missing = score_dependency(key="resource:x", document=None, tier="local", required=True, requirements=nothing,
                               statements=[])
    assert (missing.score, missing.blocking, missing.source) == (0.0, True, "missing")
    said = score_dependency(key="resource:y", document={"kind": "resource", "name": "y"}, tier="saas", required=False,
                            requirements=nothing, statements=[("scenario:a", {"supported": True, "score": None})])
    assert (said.score, said.supported, said.blocking) == (1.0, True, False)
    result = aggregate(tier="local", scores=[missing, said], required_total=nothing)
    assert result["score"] == 0.0 and result["blocking"] == ["resource:x"]


def test_swap_suggestions_carry_their_effect_on_score_and_requirements(sample):
    suggestion = next(s for s in sample["swap_suggestions"] if (s["original"], s["replacement"]) == ("postgres",
                                                                                                     "sqlite"))
    assert suggestion["available"] and suggestion["kind"] == "resource"
    assert "scenario:picker-wheel" in suggestion["declared_by"] and suggestion["relationship"] == "drop-in"
    desktop = suggestion["effect"]["desktop"]
    assert desktop["before"] == 0.2 and desktop["after"] > desktop["before"]
    assert desktop["deployable_before"] is False and desktop["deployable_after"] is True
    assert suggestion["requirements_delta"]["ram_mb"] == 16 - 512
    assert suggestion["summary"].startswith(f"postgres → sqlite: desktop +{desktop['delta']:.2f} (unblocks)")
    assert "RAM −496 MB" in suggestion["summary"]
    assert suggestion["effect"]["saas"]["delta"] < 0  # sqlite is a worse fit for multi-tenant SaaS


def test_a_suggested_swap_to_something_the_catalog_lacks_is_shown_as_unavailable():
    files = catalog(scenario_file("app", resources={"postgres": {}}), resource_file("postgres"))
    [suggestion] = analyze(lookup_of(files), "app")["swap_suggestions"]
    assert (suggestion["replacement"], suggestion["available"]) == ("sqlite", False)
    assert suggestion["reason"] == "resource sqlite is not in this catalog snapshot"
    assert suggestion["declared_by"] == ["swarm defaults"]
