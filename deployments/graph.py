"""The dependency graph of one scenario: walked recursively, shared dependencies once, swaps applied.

`walk()` starts at a scenario and follows every enabled dependency (resources and scenarios,
through resources' own dependencies too) a level at a time, replacing each swapped
dependency by its replacement wherever it appears. It records what it could not resolve
(missing entries, broken entries), refuses a cycle (`DependencyCycle`, naming the members in
order) and a swap that cannot apply (`InvalidSwap`), and derives:

* which nodes are *required* — reached from the scenario through required edges only; every
  other reachable node is *optional* (a `required: false` somewhere on each path to it);
* a topological order, dependencies first, and the depth of the graph (its longest path);
* the version check of every edge that names a version or a range.

Version ranges are npm's (`^1.2`, `~1.2.3`, `>=1 <2 || >=3`, `1.x`, `1.0.0 - 1.5.0`), checked
by `nodesemver`, a port of npm's own `semver`. An edge with both `version` and
`versionRange` (Vrooli writes both) is checked against the range; `version` alone is an
exact pin.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import nodesemver

from deployments.catalog.parsing import entry_key
from deployments.errors import DependencyCycle, InvalidSwap, UnknownScenario
from deployments.lookup import EntryLookup


@dataclass(frozen=True)
class Edge:
    """One dependency as the graph uses it (after swaps)."""

    source: str
    target: str
    required: bool
    version_range: str | None
    swapped_from: str | None
    purpose: str


@dataclass
class Graph:
    """The walked graph of one scenario."""

    root: str
    nodes: dict[str, dict]
    edges: list[Edge]
    disabled: list[dict]
    missing: dict[str, list[str]]
    swaps: dict[str, str]
    required: set[str] = field(default_factory=set)
    depth: dict[str, int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    max_depth: int = 0
    version_checks: dict[int, dict] = field(default_factory=dict)

    def incoming(self) -> dict[str, list[Edge]]:
        """Edges by target."""
        result: dict[str, list[Edge]] = {}
        for edge in self.edges:
            result.setdefault(edge.target, []).append(edge)
        return result


def normalise_swaps(swaps: dict | None) -> dict[str, str]:
    """Swaps as `{original name: replacement name}` (a `kind:` prefix is dropped); refuses malformed ones."""
    result = {}
    for original, replacement in (swaps or {}).items():
        if not isinstance(original, str) or not isinstance(replacement, str) or not original or not replacement:
            raise InvalidSwap("A swap maps a dependency's name to its replacement's name.", field=f"swaps/{original}")
        original, replacement = original.split(":", 1)[-1], replacement.split(":", 1)[-1]
        if original == replacement:
            raise InvalidSwap(f"The swap {original} → {replacement} replaces a dependency by itself.",
                              field=f"swaps/{original}")
        result[original] = replacement
    for original, replacement in result.items():
        if replacement in result:
            raise InvalidSwap(f"The swap {original} → {replacement} is chained to {replacement} → "
                              f"{result[replacement]}; swap {original} → {result[replacement]} directly.",
                              field=f"swaps/{original}")
    return dict(sorted(result.items()))


def walk(lookup: EntryLookup, scenario: str, swaps: dict | None = None) -> Graph:
    """The graph of `scenario` in the catalog behind `lookup`, with `swaps` applied everywhere."""
    swaps = normalise_swaps(swaps)
    root = entry_key("scenario", scenario)
    found = lookup.get_many([root])
    if root not in found:
        raise UnknownScenario(f"The catalog snapshot has no scenario {scenario!r}.", field="scenario")
    if scenario in swaps:
        raise InvalidSwap(f"{scenario} is the scenario being analysed; it cannot be swapped.",
                          field=f"swaps/{scenario}")
    nodes: dict[str, dict] = dict(found)
    edges: list[Edge] = []
    disabled: list[dict] = []
    missing: dict[str, list[str]] = {}
    applied: dict[str, str] = {}
    frontier = [root]
    while frontier:
        following: list[str] = []
        for key in frontier:
            document = nodes[key]
            for dependency in document.get("dependencies", []) if document.get("valid", True) else []:
                target_name = swaps.get(dependency["name"], dependency["name"])
                original = entry_key(dependency["kind"], dependency["name"])
                target = entry_key(dependency["kind"], target_name)
                if not dependency["enabled"]:
                    disabled.append({"from": key, "to": original, "required": dependency["required"]})
                    continue
                swapped_from = original if target != original else None
                if swapped_from:
                    applied[original] = target
                edges.append(Edge(key, target, dependency["required"],
                                  dependency.get("version_range") or dependency.get("version"), swapped_from,
                                  dependency.get("purpose", "")))
                if target not in nodes and target not in missing and target not in following:
                    following.append(target)
        fetched = lookup.get_many(following) if following else {}
        for key in following:
            if key in fetched:
                nodes[key] = fetched[key]
            else:
                missing[key] = []
        frontier = [key for key in following if key in fetched]
    for edge in edges:
        if edge.target in missing:
            missing[edge.target].append(edge.source)
    graph = Graph(root=root, nodes=nodes, edges=edges, disabled=disabled, missing=missing, swaps=swaps)
    _check_swaps(graph, applied)
    _order(graph)
    _mark_required(graph)
    _check_versions(graph)
    return graph


def _check_swaps(graph: Graph, applied: dict[str, str]) -> None:
    used = {original.split(":", 1)[1] for original in applied}
    for original, replacement in graph.swaps.items():
        if original not in used:
            raise InvalidSwap(f"{original} is not a dependency of {graph.root.split(':', 1)[1]} (nor of its "
                              f"dependencies), so it cannot be swapped for {replacement}.",
                              code="swap_not_applicable", field=f"swaps/{original}")
    for original_key, replacement_key in applied.items():
        if replacement_key in graph.missing:
            kind, name = replacement_key.split(":", 1)
            raise InvalidSwap(f"The swap {original_key.split(':', 1)[1]} → {name} names a {kind} this catalog "
                              f"snapshot does not have.", code="unknown_swap_target",
                              field=f"swaps/{original_key.split(':', 1)[1]}")


def _order(graph: Graph) -> None:
    """Topological order (dependencies first), longest depth, and the refusal of a cycle."""
    children: dict[str, list[str]] = {}
    for edge in graph.edges:
        if edge.target in graph.nodes:
            children.setdefault(edge.source, [])
            if edge.target not in children[edge.source]:
                children[edge.source].append(edge.target)
    for targets in children.values():
        targets.sort()
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    height: dict[str, int] = {}
    stack: list[tuple[str, int]] = [(graph.root, 0)]
    path: list[str] = []
    state[graph.root] = 1
    path.append(graph.root)
    while stack:
        key, index = stack[-1]
        targets = children.get(key, [])
        if index < len(targets):
            stack[-1] = (key, index + 1)
            target = targets[index]
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                names = " → ".join(cycle)
                raise DependencyCycle(f"The dependencies form a cycle: {names}.", extra={"cycle": cycle})
            if target not in state:
                state[target] = 1
                path.append(target)
                stack.append((target, 0))
            continue
        stack.pop()
        path.pop()
        state[key] = 2
        height[key] = 1 + max((height[target] for target in targets), default=-1)
        order.append(key)
    graph.order = order
    graph.max_depth = height[graph.root]
    depth = {graph.root: 0}
    frontier = [graph.root]
    while frontier:
        following = []
        for key in frontier:
            for target in children.get(key, []):
                if target not in depth:
                    depth[target] = depth[key] + 1
                    following.append(target)
        frontier = following
    graph.depth = depth


def _mark_required(graph: Graph) -> None:
    required = {graph.root}
    by_source: dict[str, list[Edge]] = {}
    for edge in graph.edges:
        by_source.setdefault(edge.source, []).append(edge)
    frontier = [graph.root]
    while frontier:
        following = []
        for key in frontier:
            for edge in by_source.get(key, []):
                if edge.required and edge.target in graph.nodes and edge.target not in required:
                    required.add(edge.target)
                    following.append(edge.target)
        frontier = following
    graph.required = required


@lru_cache(maxsize=4096)
def check_version(version: str | None, version_range: str) -> tuple[str, str]:
    """`(status, detail)` of a version against an npm range: `ok`, `unsatisfied`, `invalid_range`, `unknown_version`."""
    if nodesemver.valid_range(version_range, loose=False) is None:
        return "invalid_range", f"{version_range!r} is not a version range"
    if not version:
        return "unknown_version", f"the catalog entry declares no version to check against {version_range!r}"
    if nodesemver.valid(version, loose=False) is None:
        return "unknown_version", f"{version!r} is not a semantic version"
    if nodesemver.satisfies(version, version_range, loose=False):
        return "ok", f"{version} satisfies {version_range}"
    return "unsatisfied", f"{version} does not satisfy {version_range}"


def _check_versions(graph: Graph) -> None:
    for index, edge in enumerate(graph.edges):
        if not edge.version_range or edge.target not in graph.nodes:
            continue
        target = graph.nodes[edge.target]
        if not target.get("valid", True):
            continue
        status, detail = check_version(target.get("version"), edge.version_range)
        graph.version_checks[index] = {"status": status, "detail": detail}
