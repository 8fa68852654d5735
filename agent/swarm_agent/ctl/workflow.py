"""`swarmctl workflow list|versions|active|activate|rollback`: the workflow registry.

Workflows are named `TENANT/WORKFLOW` (slugs); the API addresses them by id,
so each command first resolves the pair with
`GET /api/v1/tenants/<tenant>/workflows/<workflow>`.

    swarmctl workflow list acme
    swarmctl workflow versions acme/hello
    swarmctl workflow active acme/hello
    swarmctl workflow activate acme/hello 1.2.0
    swarmctl workflow rollback acme/hello
"""
from __future__ import annotations

import argparse
import json
from urllib.parse import quote

import httpx

from swarm_agent.client import ApiConfig, ApiError, api_client, get_all, raise_for_api_error


def register(subparsers) -> None:
    """Add `workflow` and its subcommands to swarmctl."""
    workflow = subparsers.add_parser("workflow", help="List workflows and versions; activate and roll back.")
    commands = workflow.add_subparsers(dest="workflow_command", required=True)

    listing = commands.add_parser("list", help="A tenant's workflows and their active versions.")
    listing.add_argument("tenant", help="Tenant slug.")
    _add_common(listing)
    listing.set_defaults(handler=handle_list)

    versions = commands.add_parser("versions", help="Every version of a workflow, newest first.")
    versions.add_argument("workflow", type=_workflow_name, help="TENANT/WORKFLOW")
    _add_common(versions)
    versions.set_defaults(handler=handle_versions)

    active = commands.add_parser("active", help="What to boot: the active version's URL, hash and limits (JSON).")
    active.add_argument("workflow", type=_workflow_name, help="TENANT/WORKFLOW")
    _add_common(active, json_flag=False)
    active.set_defaults(handler=handle_active)

    activate = commands.add_parser("activate", help="Make a version the active one.")
    activate.add_argument("workflow", type=_workflow_name, help="TENANT/WORKFLOW")
    activate.add_argument("version", help="The version label (e.g. 1.2.0) or #ID for a version id.")
    _add_common(activate)
    activate.set_defaults(handler=handle_activate)

    rollback = commands.add_parser("rollback", help="Re-activate the previously active version.")
    rollback.add_argument("workflow", type=_workflow_name, help="TENANT/WORKFLOW")
    _add_common(rollback)
    rollback.set_defaults(handler=handle_rollback)


def _add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--url", help="Control plane URL (default: $SWARM_URL).")
    parser.add_argument("--token", help="API token (default: $SWARM_TOKEN).")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="Print the server's JSON.")


def _workflow_name(text: str) -> tuple[str, str]:
    tenant, _, workflow = text.partition("/")
    if not tenant or not workflow or "/" in workflow:
        raise argparse.ArgumentTypeError(f"{text!r} is not TENANT/WORKFLOW")
    return tenant, workflow


def _get(client: httpx.Client, path: str):
    response = client.get(path)
    raise_for_api_error(response)
    return response.json()


def _post(client: httpx.Client, path: str):
    response = client.post(path)
    raise_for_api_error(response)
    return response.json()


def resolve_workflow(client: httpx.Client, tenant: str, workflow: str) -> dict:
    """The workflow JSON (with its id) of `tenant/workflow`; a missing one raises `ApiError` 404."""
    return _get(client, f"/tenants/{quote(tenant, safe='')}/workflows/{quote(workflow, safe='')}")


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _print_version(prefix: str, name: str, version: dict) -> None:
    print(f"{prefix} {name} {version['version']} (version id {version['id']}, sha256 {version['bundle_hash']})")


def _client(args: argparse.Namespace) -> httpx.Client:
    return api_client(ApiConfig.from_env(args.url, args.token))


def handle_list(args: argparse.Namespace) -> int:
    """Print a tenant's workflows."""
    with _client(args) as client:
        workflows = get_all(client, f"/tenants/{quote(args.tenant, safe='')}/workflows")
    if args.json:
        _print_json(workflows)
        return 0
    if not workflows:
        print(f"tenant {args.tenant} has no workflows")
    for workflow in workflows:
        active = workflow.get("active_version") or "-"
        print(f"{workflow['tenant']}/{workflow['slug']}\tid {workflow['id']}\truntime {workflow['runtime']}"
              f"\tactive {active}")
    return 0


def handle_versions(args: argparse.Namespace) -> int:
    """Print every version of a workflow, newest first, marking the active one."""
    tenant, slug = args.workflow
    with _client(args) as client:
        workflow = resolve_workflow(client, tenant, slug)
        versions = get_all(client, f"/workflows/{workflow['id']}/versions")
    if args.json:
        _print_json(versions)
        return 0
    for version in versions:
        marker = "*" if version["is_active"] else " "
        print(f"{marker} {version['version']}\tid {version['id']}\t{version['bundle_hash']}\t{version['created_at']}")
    return 0


def handle_active(args: argparse.Namespace) -> int:
    """Print the active version's boot description as JSON."""
    tenant, slug = args.workflow
    with _client(args) as client:
        workflow = resolve_workflow(client, tenant, slug)
        _print_json(_get(client, f"/workflows/{workflow['id']}/active"))
    return 0


def _find_version(client: httpx.Client, workflow_id: int, wanted: str) -> dict:
    versions = get_all(client, f"/workflows/{workflow_id}/versions")
    if wanted.startswith("#") and wanted[1:].isdigit():
        matches = [version for version in versions if version["id"] == int(wanted[1:])]
    else:
        label = wanted[1:] if wanted.startswith("v") else wanted
        matches = [version for version in versions if version["version"] == label]
    if not matches:
        raise ApiError(404, "not_found", f"workflow {workflow_id} has no version {wanted}", "version")
    return matches[0]


def handle_activate(args: argparse.Namespace) -> int:
    """Activate a version given by label (or `#id`)."""
    tenant, slug = args.workflow
    with _client(args) as client:
        workflow = resolve_workflow(client, tenant, slug)
        version = _find_version(client, workflow["id"], args.version)
        activated = _post(client, f"/workflows/{workflow['id']}/versions/{version['id']}/activate")
    if args.json:
        _print_json(activated)
    else:
        _print_version("activated", f"{tenant}/{slug}", activated)
    return 0


def handle_rollback(args: argparse.Namespace) -> int:
    """Roll back to the previously active version."""
    tenant, slug = args.workflow
    with _client(args) as client:
        workflow = resolve_workflow(client, tenant, slug)
        restored = _post(client, f"/workflows/{workflow['id']}/rollback")
    if args.json:
        _print_json(restored)
    else:
        _print_version("rolled back", f"{tenant}/{slug}", restored)
    return 0
