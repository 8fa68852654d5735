"""A scenario's analysis: its DAG, problems, aggregate requirements, fitness on every tier, and swap suggestions.

`analyze(lookup, scenario, swaps)` is pure (no database of its own, no HTTP): it reads entries
through `lookup` and returns one JSON-ready dict — the thing the cache stores
(`deployments.selectors.scenario_analysis` caches it by snapshot hash, scenario and swaps, so a
hit parses nothing). Its keys:

    snapshot, scenario, swaps, root, max_depth,
    nodes:        [{key, kind, name, version, path, required, depth, valid, runs_as,
                    requirements, requirements_source}]          (dependencies first)
    edges:        [{from, to, required, version_range, swapped_from, version_check}]
    disabled:     [{from, to, required}]                          (`enabled: false`: not followed)
    missing:      [{key, needed_by, required}]
    invalid:      [{key, path, problems, required}]
    version_problems: [{from, to, version_range, status, detail, required}]
    requirements: {required, optional, total, unknown, complete}
    fitness:      {tier: {score, deployable, blocking, weakest, budget_factor, dropped_optional,
                          explanation, dependencies: [{key, score, supported, reason, blocking, required,
                                                       source, declared_by}]}}
    swap_suggestions: [{original, replacement, kind, available, reason, declared_by, relationship, notes,
                        effect: {tier: {before, after, delta, deployable_before, deployable_after}},
                        requirements_delta, summary}]

Requirements: each node counts once however many nodes depend on it. `required` sums the
required nodes, `optional` what the optional ones would add, `total` both. A node's own
figures are its catalog `requirements`, else Swarm's default for a well-known resource, else
for a scenario the default of its own processes, else 0 and the node is listed in `unknown`
(`complete` is then false: the sum is a lower bound).
"""
from __future__ import annotations

import sys

from deployments.catalog.parsing import entry_key
from deployments.defaults import RESOURCES, SCENARIO_REQUIREMENTS
from deployments.errors import DependencyCycle, InvalidSwap
from deployments.fitness import score_all
from deployments.graph import Graph, walk
from deployments.lookup import EntryLookup
from deployments.requirements import Requirements, delta, describe_delta, total
from deployments.tiers import TIERS

#: Part of every cache key: a change to what an analysis contains must change this.
ANALYZER_VERSION = 1

_FAILED_VERSION_CHECKS = ("unsatisfied", "invalid_range")


def node_requirements(document: dict | None) -> tuple[Requirements, str]:
    """A node's own requirements and where they come from: `catalog`, `default`, `unknown`, `missing`, `invalid`."""
    if document is None:
        return Requirements(), "missing"
    if not document.get("valid", True):
        return Requirements(), "invalid"
    if document.get("requirements") is not None:
        return Requirements.from_dict(document["requirements"]), "catalog"
    if document["kind"] == "resource" and document["name"] in RESOURCES:
        return RESOURCES[document["name"]].requirements, "default"
    if document["kind"] == "scenario":
        return SCENARIO_REQUIREMENTS, "default"
    return Requirements(), "unknown"


def analyze(lookup: EntryLookup, scenario: str, swaps: dict | None = None, *, suggest: bool = True) -> dict:
    """The analysis of `scenario` with `swaps` (see the module docstring for its shape).

    Raises `UnknownScenario`, `InvalidSwap` or `DependencyCycle`.
    """
    graph = walk(lookup, scenario, swaps)
    result = _describe(graph, lookup.snapshot_sha256, scenario)
    result["swap_suggestions"] = _suggestions(lookup, scenario, graph, result) if suggest else []
    return _interned(result) if suggest else result


def _interned(value):
    """`value` with every string interned: the cache's pickle then stores each distinct string once.

    An analysis repeats the same keys, reasons and sources across six tiers; sharing them halves
    the cached bytes and makes a cache hit (one unpickle) about three times faster.
    """
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(key) if isinstance(key, str) else key: _interned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interned(item) for item in value]
    return value


def _describe(graph: Graph, snapshot: str, scenario: str) -> dict:
    incoming = graph.incoming()
    version_problem: dict[str, str] = {}
    version_problems = []
    edges = []
    for index, edge in enumerate(graph.edges):
        check = graph.version_checks.get(index)
        edges.append({"from": edge.source, "to": edge.target, "required": edge.required,
                      "version_range": edge.version_range, "swapped_from": edge.swapped_from,
                      "version_check": check})
        if check and check["status"] in _FAILED_VERSION_CHECKS:
            needed = edge.required and edge.source in graph.required
            version_problems.append({"from": edge.source, "to": edge.target, "version_range": edge.version_range,
                                     "status": check["status"], "detail": check["detail"], "required": needed})
            version_problem.setdefault(edge.target, f"{check['detail']} (required by {edge.source})")

    ordered = [key for key in graph.order if key in graph.nodes] + sorted(graph.missing)
    nodes, scored, unknown = [], [], []
    required_parts, optional_parts = [], []
    for key in ordered:
        document = graph.nodes.get(key)
        requirements, source = node_requirements(document)
        required = key in graph.required or (key in graph.missing and any(
            edge.required and edge.source in graph.required for edge in incoming.get(key, [])))
        (required_parts if required else optional_parts).append(requirements)
        if source == "unknown":
            unknown.append(key)
        statements = _statements(graph, key, incoming.get(key, []))
        scored.append((key, document, required, requirements, statements, version_problem.get(key, "")))
        if document is not None:
            nodes.append({
                "key": key, "kind": document["kind"], "name": document["name"], "version": document.get("version"),
                "path": document["path"], "required": required, "depth": graph.depth.get(key, 0),
                "valid": document.get("valid", True), "runs_as": _runs_as(document),
                "requirements": requirements.as_dict(), "requirements_source": source,
            })
    required_total, optional_total = total(required_parts), total(optional_parts)
    return {
        "analyzer_version": ANALYZER_VERSION,
        "snapshot": snapshot, "scenario": scenario, "swaps": graph.swaps, "root": graph.root,
        "max_depth": graph.max_depth,
        "nodes": nodes,
        "edges": edges,
        "disabled": graph.disabled,
        "missing": [{"key": key, "needed_by": sorted(set(sources)), "required": any(
            edge.required and edge.source in graph.required for edge in incoming.get(key, []))}
            for key, sources in sorted(graph.missing.items())],
        "invalid": [{"key": node["key"], "path": node["path"], "required": node["required"],
                     "problems": graph.nodes[node["key"]]["problems"]} for node in nodes if not node["valid"]],
        "version_problems": version_problems,
        "requirements": {"required": required_total.as_dict(), "optional": optional_total.as_dict(),
                         "total": (required_total + optional_total).as_dict(), "unknown": unknown,
                         "complete": not unknown},
        "fitness": score_all(nodes=scored, required_total=required_total),
    }


def _runs_as(document: dict) -> str:
    if document["kind"] == "scenario":
        return "service"
    if not document.get("valid", True):
        return "unknown"
    if document.get("runs_as"):
        return document["runs_as"]
    if document["name"] in RESOURCES:
        return RESOURCES[document["name"]].runs_as
    return "service"


def _statements(graph: Graph, key: str, edges) -> dict[str, list[tuple[str, dict]]]:
    """What the node's dependents say about it, per tier."""
    by_tier: dict[str, list[tuple[str, dict]]] = {}
    for edge in edges:
        dependent = graph.nodes.get(edge.source) or {}
        for tier, statement in dependent.get("declared_support", {}).get(key, {}).items():
            by_tier.setdefault(tier, []).append((edge.source, statement))
    return by_tier


def _candidates(graph: Graph) -> dict[tuple[str, str], dict]:
    """Swap candidates `(original key, replacement name)` → where they come from."""
    incoming = graph.incoming()
    found: dict[tuple[str, str], dict] = {}

    def add(key: str, replacement: str, declared_by: str, relationship: str = "", notes: str = "") -> None:
        name = key.split(":", 1)[1]
        if replacement == name:
            return
        entry = found.setdefault((key, replacement), {"declared_by": [], "relationship": relationship,
                                                      "notes": notes})
        if declared_by not in entry["declared_by"]:
            entry["declared_by"].append(declared_by)
        entry["relationship"] = entry["relationship"] or relationship
        entry["notes"] = entry["notes"] or notes

    for key, document in graph.nodes.items():
        if key == graph.root:
            continue
        for edge in incoming.get(key, []):
            dependent = graph.nodes.get(edge.source) or {}
            for option in dependent.get("declared_swaps", {}).get(key, []):
                add(key, option["id"], edge.source, option["relationship"], option["notes"])
            for statement in dependent.get("declared_support", {}).get(key, {}).values():
                for alternative in statement.get("alternatives", []):
                    add(key, alternative, edge.source)
        if document.get("valid", True):
            for option in document.get("swappable_with", []):
                add(key, option["id"], key, option["relationship"], option["notes"])
            for statement in document.get("own_support", {}).values():
                for alternative in statement.get("alternatives", []):
                    add(key, alternative, key)
        if document["kind"] == "resource" and document["name"] in RESOURCES:
            for replacement in RESOURCES[document["name"]].swappable_with:
                add(key, replacement, "swarm defaults")
    return found


def _suggestions(lookup: EntryLookup, scenario: str, graph: Graph, before: dict) -> list[dict]:
    candidates = _candidates(graph)
    if not candidates:
        return []
    imperfect = {dependency["key"] for tier in TIERS for dependency in before["fitness"][tier]["dependencies"]
                 if dependency["score"] < 1}
    keys = {entry_key(original.split(":", 1)[0], replacement) for original, replacement in candidates}
    present = lookup.get_many(sorted(keys))
    suggestions = []
    for (original, replacement), origin in sorted(candidates.items()):
        if original not in imperfect:
            continue
        kind, original_name = original.split(":", 1)
        suggestion = {"original": original_name, "replacement": replacement, "kind": kind, "available": True,
                      "reason": "", **origin, "effect": {}, "requirements_delta": {}, "summary": ""}
        suggestions.append(suggestion)
        if entry_key(kind, replacement) not in present:
            suggestion.update(available=False, reason=f"{kind} {replacement} is not in this catalog snapshot")
            continue
        try:
            after = analyze(lookup, scenario, {**graph.swaps, original_name: replacement}, suggest=False)
        except (DependencyCycle, InvalidSwap) as error:
            suggestion.update(available=False, reason=error.detail)
            continue
        _effect(suggestion, before, after)
    return suggestions


def _effect(suggestion: dict, before: dict, after: dict) -> None:
    changes = []
    for tier in TIERS:
        old, new = before["fitness"][tier], after["fitness"][tier]
        change = round(new["score"] - old["score"], 3)
        suggestion["effect"][tier] = {"before": old["score"], "after": new["score"], "delta": change,
                                      "deployable_before": old["deployable"], "deployable_after": new["deployable"]}
        # A change that prints as ±0.00 says nothing to a reader; it is still in `effect`.
        if abs(change) >= 0.005 or old["deployable"] != new["deployable"]:
            text = f"{tier} {_signed(change)}"
            if not old["deployable"] and new["deployable"]:
                text += " (unblocks)"
            elif old["deployable"] and not new["deployable"]:
                text += " (blocks)"
            changes.append(text)
    requirement_change = delta(before["requirements"]["total"], after["requirements"]["total"])
    suggestion["requirements_delta"] = requirement_change
    sizes = describe_delta(requirement_change)
    summary = f"{suggestion['original']} → {suggestion['replacement']}: " + (", ".join(changes) or "no score change")
    suggestion["summary"] = summary + (f", {sizes}" if sizes else "")


def _signed(value: float) -> str:
    return f"+{value:.2f}" if value >= 0 else f"−{abs(value):.2f}"
