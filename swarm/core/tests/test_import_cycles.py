"""No import cycles between the project's own modules, so none can come back.

The graph has an edge A → B for every import A makes at module level (in
its body, a class body, an `if` or a `try`; not inside a function, and not
under `if TYPE_CHECKING:`) of a module B of builds, drones, workflows, tenancy, deployments,
bundles or swarm. `from P import name` points at the module `P.name` when
there is one, else at `P` itself.

Importing a submodule also runs its package's `__init__`, but that is not an
edge: a package `__init__` that re-exports its submodules would otherwise
make every sibling import a cycle. What is a cycle is a module that imports
names from its own package's `__init__` (`from builds.services import x` in
builds/services/claims.py) while that `__init__` imports it back; such
modules import from the sibling module instead, and the second test says so
by name.

The rule that breaks the cycle services ↔ tasks: services import their app's
`tasks` at module level and enqueue on commit; a task imports the services
it calls inside its body.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("builds", "drones", "workflows", "bundles", "swarm", "tenancy", "deployments")


@cache
def project_modules() -> dict[str, Path]:
    """Dotted name → file of every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(statements):
    """The import statements that run when the module is imported."""
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _module_level_imports(node.orelse)
        else:
            for block in ("body", "handlers", "orelse", "finalbody"):
                yield from _module_level_imports(getattr(node, block, None) or [])


def _package_of(module: str) -> str:
    path = project_modules()[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The project modules one import statement points at."""
    modules = project_modules()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        found = set()
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
        return found
    base = node.module or ""
    if node.level:
        package = _package_of(module)
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            found.add(f"{base}.{alias.name}")
        elif base in modules:
            found.add(base)
    return found


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Module → the project modules it imports at module level."""
    graph = {}
    for module, path in project_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = set()
        for node in _module_level_imports(tree.body):
            edges |= _targets(module, node)
        edges.discard(module)
        graph[module] = frozenset(edges)
    return graph


def find_cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, frozenset[str]], group: set[str]) -> list[str]:
    """A closed path through `group`, starting at its first module."""
    start = min(group)
    path, seen = [start], {start}
    while True:
        following = sorted(target for target in graph[path[-1]] if target in group)
        if start in following and len(path) > 1:
            return [*path, start]
        step = next((target for target in following if target not in seen), None)
        if step is None:  # only edges back into the path: close the cycle where it loops
            loop_to = following[0]
            return [*path[path.index(loop_to):], loop_to]
        path.append(step)
        seen.add(step)


def test_the_graph_sees_the_project():
    graph = import_graph()
    assert "builds.services.claims" in graph["builds.services"]  # the package re-exports its submodules
    assert "builds.services.lifecycle" in graph["builds.services.claims"]
    assert "builds.services" not in graph["builds.tasks"]  # a task imports its services inside its body


def test_cycle_finder_names_the_modules_of_a_cycle():
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_no_import_cycles_between_project_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (module-level imports):\n" + "\n".join(" → ".join(c) for c in cycles)


def test_no_module_imports_its_own_package_init():
    """`from builds.services import x` inside builds/services/ is a cycle in waiting: import from the sibling."""
    graph = import_graph()
    offenders = []
    for module, targets in graph.items():
        ancestors = {module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)}
        for target in sorted(targets & ancestors):
            if graph[target]:  # an __init__ that imports nothing cannot import the module back
                offenders.append(f"{module} imports from its package {target}")
    assert not offenders, "\n".join(offenders)
