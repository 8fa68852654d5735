"""Deployment manager: the deepest scenario of a 2,000-entry catalog, analysed cold and cached; its manifest and export.

A generated catalog (`deployments.catalog.generate`: 1,800 scenarios and 200 resources in Vrooli's
formats, DAG depth 8, dependencies shared) is imported into a throw-away database. Then:

* cold analysis of the deepest scenario — the cache entry deleted before each run, so every run
  reads the closure from PostgreSQL, walks, sizes, scores six tiers and computes swap effects;
  baseline: `json.loads` of the raw files of the same closure (the least any analyzer must do);
* warm analysis — the same call answered from the cache (Redis); baselines: a bare Redis GET of
  the same bytes, and that GET plus `pickle.loads` (what a hit cannot avoid);
* manifest assembly of a profile of that scenario (enterprise tier, its infrastructure secrets
  decided), and canonical export (sorted keys, fixed separators, sha256); baseline: `json.dumps`.

Targets: cold < 500 ms, warm < 10 ms, export < 50 ms. The package run on drones is phase 2.
Prints JSON as its last line.

    .venv/bin/python bench/deploy_manager.py [--scenarios 1800] [--resources 200] [--depth 8] [--runs 9]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))
from harness import log, percentile, prepare_environment  # noqa: E402


def timed(function, runs: int, before=None) -> list[float]:
    """Milliseconds of `runs` calls of `function` (`before` runs untimed ahead of each)."""
    figures = []
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        function()
        figures.append((time.perf_counter() - started) * 1000)
    return figures


def summary(figures: list[float]) -> dict:
    return {"median_ms": round(statistics.median(figures), 3), "p90_ms": round(percentile(figures, 0.9), 3),
            "max_ms": round(max(figures), 3), "runs": len(figures)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=1800)
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--runs", type=int, default=9)
    options = parser.parse_args()

    prepare_environment("deploy_manager")
    from django.core.cache import cache

    from deployments import selectors, services
    from deployments.catalog import tree_from_files
    from deployments.catalog.generate import generated_catalog
    from deployments.manifest import canonical_json
    from workflows.models import Tenant

    log(f"generating {options.scenarios} scenarios and {options.resources} resources, depth {options.depth}")
    generated = generated_catalog(scenarios=options.scenarios, resources=options.resources, depth=options.depth)
    started = time.perf_counter()
    tree = tree_from_files(generated.files)
    result = services.catalog_import(tree=tree, source="files", origin="bench", actor="bench")
    import_seconds = time.perf_counter() - started
    snapshot = result.snapshot
    scenario = generated.deepest
    log(f"imported {snapshot.sha256[:12]} in {import_seconds:.1f} s; analysing {scenario}")

    key = selectors.analysis_cache_key(snapshot_sha256=snapshot.sha256, scenario=scenario, swaps={})
    cold = timed(lambda: selectors.scenario_analysis(snapshot=snapshot, scenario=scenario), options.runs,
                 before=lambda: cache.delete(key))
    analysis = selectors.scenario_analysis(snapshot=snapshot, scenario=scenario)
    closure_paths = [node["path"] for node in analysis["nodes"]]
    baseline_cold = timed(lambda: [json.loads(generated.files[path]) for path in closure_paths], options.runs)

    warm = timed(lambda: selectors.scenario_analysis(snapshot=snapshot, scenario=scenario), 200)
    client = cache._cache.get_client(key)  # the raw redis-py client behind Django's cache
    raw_key = cache.make_and_validate_key(key)
    baseline_warm = timed(lambda: client.get(raw_key), 200)
    cached_bytes = len(client.get(raw_key))
    baseline_unpickle = timed(lambda: pickle.loads(client.get(raw_key)), 200)

    tenant = Tenant.objects.create(name="Bench", slug="bench")
    version = services.profile_create(tenant=tenant, slug="deepest", snapshot=snapshot, scenario=scenario,
                                      tier="enterprise", actor="bench")
    plan = selectors.profile_secrets_plan(version=version)
    decisions = {item["id"]: {"class": "per_install_generated"} for item in plan["infrastructure"]}
    version = services.profile_update(profile=version.profile, secrets=decisions, actor="bench",
                                      note="generate the infrastructure secrets per install").version
    log(f"assembling the manifest of profile v{version.number} ({len(decisions)} infrastructure secrets decided)")
    assemblies = []
    assembly = timed(lambda: assemblies.append(selectors.profile_manifest(version=version)), max(3, options.runs // 2))
    manifest = assemblies[-1]
    document = manifest.document
    export = timed(lambda: hashlib.sha256(canonical_json(document)).hexdigest(), 50)
    baseline_export = timed(lambda: json.dumps(document), 50)
    same_bytes = all(item.canonical == manifest.canonical for item in assemblies)

    fitness = analysis["fitness"]
    figures = {
        "benchmark": "deploy_manager",
        "catalog": {"entries": len(generated.files), "scenarios": options.scenarios, "resources": options.resources,
                    "snapshot": snapshot.sha256, "import_seconds": round(import_seconds, 2)},
        "scenario": {"name": scenario, "nodes": len(analysis["nodes"]), "edges": len(analysis["edges"]),
                     "max_depth": analysis["max_depth"], "swap_suggestions": len(analysis["swap_suggestions"]),
                     "requirements_required": analysis["requirements"]["required"],
                     "scores": {tier: fitness[tier]["score"] for tier in fitness},
                     "cached_bytes": cached_bytes},
        "cold_analysis": {**summary(cold), "target_ms": 500, "met": statistics.median(cold) < 500,
                          "baseline_json_loads_closure": summary(baseline_cold),
                          "ratio_to_baseline": round(statistics.median(cold) / statistics.median(baseline_cold), 2)},
        "warm_analysis": {**summary(warm), "target_ms": 10, "met": statistics.median(warm) < 10,
                          "baseline_redis_get": summary(baseline_warm),
                          "baseline_redis_get_and_unpickle": summary(baseline_unpickle),
                          "ratio_to_baseline": round(statistics.median(warm) / statistics.median(baseline_warm), 2)},
        "manifest_assembly": {**summary(assembly), "services": len(document["services"]),
                              "secrets": len(document["secrets"]), "bytes": len(manifest.canonical),
                              "same_bytes_every_time": same_bytes},
        "export": {**summary(export), "target_ms": 50, "met": statistics.median(export) < 50,
                   "baseline_json_dumps": summary(baseline_export),
                   "ratio_to_baseline": round(statistics.median(export) / statistics.median(baseline_export), 2),
                   "sha256": manifest.sha256},
        "package_run": "phase 2 (packaging on the fleet is not built yet)",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
