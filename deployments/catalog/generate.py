"""A generated catalog in Vrooli's formats, for the benchmark and for tests that need size: N entries, a deep DAG.

`generated_catalog(scenarios=1800, resources=200, depth=8)` lays the scenarios out in `depth - 1`
layers; each depends on two to three scenarios of the layer below, drawn from a narrow window so
that dependencies are shared heavily, and on one to three resources, most often the popular
ones. Some resources depend on base resources (which depend on nothing), so the longest path
from a top-layer scenario is `depth` edges: `depth - 2` scenario edges, one to a resource, one
to a base resource. Every file is valid; versions and ranges agree; a fixed seed gives the same
bytes every time.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

COMMON_RESOURCES = ("postgres", "redis", "sqlite", "ollama", "qdrant", "minio", "n8n", "openrouter", "vault",
                    "searxng", "whisper", "browserless")


@dataclass(frozen=True)
class GeneratedCatalog:
    """The files of a generated tree (`{path: bytes}`) and the name of a scenario on its deepest layer."""

    files: dict[str, bytes]
    deepest: str
    depth: int


def _resource(name: str, rng: random.Random, names: list[str], index: int) -> dict:
    document = {
        "name": name,
        "display_name": name.replace("-", " ").title(),
        "description": f"Generated resource {name}",
        "driver": "docker-service" if name != "openrouter" else "cloud-api",
        "portability_tier": "full",
        "platforms": {"linux": "supported", "macos": "supported", "windows": "partial"},
        "dependencies": [],
        "ports": [{"name": "main", "container": 7000 + index, "host": 7000 + index}],
        "health_checks": [{"type": "tcp", "target": f"127.0.0.1:{7000 + index}", "interval_seconds": 10,
                           "timeout_seconds": 5}],
        "runtime": {"image": f"example/{name}:1", "env": {f"{name.upper().replace('-', '_')}_MODE": "default"}},
    }
    if name not in COMMON_RESOURCES:
        document["requirements"] = {"ram_mb": rng.choice([64, 128, 256, 512]), "disk_mb": rng.choice([64, 256, 1024]),
                                    "cpu_cores": rng.choice([0.05, 0.1, 0.25, 0.5])}
        if index >= 40 and rng.random() < 0.3:
            # Only on the base resources (12–39), which depend on nothing: resource chains stay one edge long.
            document["dependencies"] = sorted(set(rng.sample(names[12:40], k=2)))
        if rng.random() < 0.2:
            document["runtime"]["env"][f"{name.upper().replace('-', '_')}_PASSWORD"] = "generated"
        if rng.random() < 0.3:
            document["deployment"] = {"profiles": {"desktop": {
                "linux": {"support": "supported"}, "macos": {"support": "conditional",
                                                             "limitations": ["needs Docker Desktop"]},
                "windows": {"support": "conditional", "limitations": ["needs Docker Desktop"]}}}}
    if name == "sqlite":
        document.update(runs_as="library", requirements={"ram_mb": 16, "disk_mb": 100, "cpu_cores": 0.1})
    return document


def _scenario(name: str, layer: int, rng: random.Random, below: list[str], resources: list[str],
              popular: list[str]) -> dict:
    dependencies_resources = {}
    for resource in sorted(set(rng.choices(popular, k=rng.randint(1, 2)) + rng.sample(resources, k=1))):
        dependencies_resources[resource] = {"type": resource, "enabled": True, "required": rng.random() > 0.15,
                                            "purpose": "generated"}
    scenarios = {}
    if below:
        position = rng.randrange(len(below))
        window = [below[(position + offset) % len(below)] for offset in range(6)]
        for dependency in sorted(set(rng.sample(window, k=rng.randint(2, 3)))):
            scenarios[dependency] = {"required": rng.random() > 0.1, "version": "1.0.0", "versionRange": "^1.0.0"}
    document = {
        "version": "1.0.0",
        "service": {"name": name, "displayName": name, "description": f"Generated scenario on layer {layer}",
                    "version": f"1.{layer}.{rng.randint(0, 9)}", "type": "scenario"},
        "ports": {"api": {"env_var": "API_PORT", "range": "15000-19999"},
                  "ui": {"env_var": "UI_PORT", "range": "20000-24999"}},
        "lifecycle": {"health": {"checks": [
            {"name": "api", "type": "http", "target": "http://localhost:${API_PORT}/health"}]}},
        "dependencies": {"resources": dependencies_resources, "scenarios": scenarios},
        # Small Go services: hundreds of them in one closure still fit an enterprise appliance.
        "requirements": {"ram_mb": rng.choice([32, 48, 64]), "disk_mb": 40, "cpu_cores": 0.05},
    }
    if "postgres" in dependencies_resources:
        document["tier_feasibility"] = {"dependencies": {"resources": {"postgres": {
            "platform_support": {"tier-2-desktop": {"supported": False, "fitness_score": 0.2,
                                                    "reason": "needs a database server",
                                                    "alternatives": ["sqlite"]}},
            "swappable_with": [{"id": "sqlite", "relationship": "drop-in"}]}}}}
    if rng.random() < 0.3:
        document["secrets"] = [{"id": f"{name.upper().replace('-', '_')}_SESSION_KEY",
                                "class": "per_install_generated"}]
    return document


def generated_catalog(*, scenarios: int = 1800, resources: int = 200, depth: int = 8,
                      seed: int = 20261127) -> GeneratedCatalog:
    """A catalog of `scenarios + resources` entries whose DAG is `depth` scenario layers deep."""
    rng = random.Random(seed)
    resource_names = list(COMMON_RESOURCES) + [f"resource-{index:04d}" for index in range(resources - len(
        COMMON_RESOURCES))]
    files: dict[str, bytes] = {}
    for index, name in enumerate(resource_names):
        files[f"resources/{name}/resource.json"] = _dump(_resource(name, rng, resource_names, index))
    popular = ["postgres", "redis", "ollama", "qdrant", "minio"] + resource_names[12:30]
    layer_count = max(1, depth - 1)
    per_layer = max(1, scenarios // layer_count)
    layers: list[list[str]] = []
    for layer in range(1, layer_count + 1):
        count = per_layer if layer < layer_count else scenarios - per_layer * (layer_count - 1)
        names = [f"scenario-{layer}-{index:04d}" for index in range(count)]
        below = layers[-1] if layers else []
        for name in names:
            files[f"scenarios/{name}/.vrooli/service.json"] = _dump(
                _scenario(name, layer, rng, below, resource_names, popular))
        layers.append(names)
    deepest = layers[-1][0]
    return GeneratedCatalog(files=files, deepest=deepest, depth=depth)


def _dump(document: dict) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
