"""Every public function of a services module takes keyword arguments only (STYLE.md rule 1).

A services module is `<app>/services.py` or a module of an `<app>/services/`
package, in builds, drones, workflows, bundles and swarm/core. Public means
defined at module level with a name that does not start with `_`.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
APPS = ("builds", "drones", "workflows", "bundles", "swarm/core", "tenancy", "deployments")


def services_modules() -> list[Path]:
    found = []
    for app in APPS:
        found += [path for path in [ROOT / app / "services.py"] if path.exists()]
        found += sorted((ROOT / app / "services").glob("*.py"))
    return found


def positional_parameters(path: Path) -> list[str]:
    """`module:function(parameter)` for each public function parameter that can be passed by position."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            names = [arg.arg for arg in (*node.args.posonlyargs, *node.args.args)]
            if node.args.vararg:
                names.append(f"*{node.args.vararg.arg}")
            found += [f"{path.relative_to(ROOT)}:{node.name}({name})" for name in names]
    return found


def test_the_services_modules_are_found():
    names = {str(path.relative_to(ROOT)) for path in services_modules()}
    assert {"builds/services/claims.py", "drones/services/heartbeat.py", "workflows/services/boot.py",
            "bundles/services.py", "swarm/core/services.py"} <= names


def test_public_service_functions_are_keyword_only():
    offenders = [entry for path in services_modules() for entry in positional_parameters(path)]
    assert not offenders, "positional parameters of public service functions:\n" + "\n".join(offenders)
