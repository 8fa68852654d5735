"""Assembling `bundle.json` from one profile version: swaps applied, services from the DAG, secrets from the plan.

The order of refusals is the order in which a person fixes them:

1. the scenario is not deployable on the tier (`NotDeployable`: blocking dependencies, missing
   or broken entries, failed version checks — with the swaps that would help);
2. an infrastructure secret would reach the bundle (`InfrastructureSecrets`: each one, where it
   was found, and the swaps that remove it);
3. the result breaks the bundle-manifest schema (`ManifestInvalid`: every error with its pointer).

What becomes a service: each component of each scenario in the bundle (`<scenario>-<component>`;
an `api` is an `api-binary`, a `ui` a `ui-bundle`, anything else a `worker`), and each resource
that runs as a process (`runs_as: service`) under its own name (`type: resource`). Resources that
are libraries, hosted APIs or host tools are recorded in the dependent service's
`metadata.uses` instead. Services are listed dependencies first, as the DAG orders them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deployments.errors import InfrastructureSecrets, ManifestInvalid, NotDeployable
from deployments.lookup import EntryLookup
from deployments.manifest.schema import SCHEMA_VERSION, canonical_json, canonical_sha256, validate_manifest
from deployments.secrets_plan import bundle_nodes, plan_secrets
from deployments.tiers import DEFAULT_PLATFORMS

DEFAULT_IPC = {"mode": "loopback-http", "host": "127.0.0.1", "port": 47710, "auth_token_path": "runtime/auth-token"}
DEFAULT_TELEMETRY = {"file": "telemetry/deployment-telemetry.jsonl"}
DEFAULT_PORT_RANGE = {"min": 47000, "max": 47999}
_ROLE_TYPES = {"api": "api-binary", "ui": "ui-bundle"}


@dataclass(frozen=True)
class AssembledManifest:
    """A valid manifest, its canonical bytes and their sha256, and the plan it was built from."""

    document: dict
    canonical: bytes
    sha256: str
    secrets_plan: dict


def assemble_manifest(*, content: dict, lookup: EntryLookup, analysis_for: Callable[[dict], dict], profile: str,
                      version: int) -> AssembledManifest:
    """The manifest of a profile version's `content` (`ProfileVersion.content()`); see the module docstring."""
    tier, settings = content["tier"], content.get("settings") or {}
    analysis = analysis_for(content.get("swaps") or {})
    _refuse_undeployable(analysis, tier)
    plan = plan_secrets(analysis=analysis, lookup=lookup, tier=tier, decisions=content.get("secrets") or {},
                        settings=settings, analysis_for=analysis_for)
    if plan["infrastructure"]:
        names = ", ".join(item["id"] for item in plan["infrastructure"])
        raise InfrastructureSecrets(
            f"Infrastructure secrets would reach the {tier} bundle: {names}. "
            + " ".join(entry["reason"] + "." for entry in plan["excluded"]
                       if entry["id"] in {item["id"] for item in plan["infrastructure"]}),
            extra={"secrets": [{"id": item["id"], "owners": item["owners"], "found_in": item["found_in"],
                                "swaps": item["fixes"]["swaps"], "decide": item["fixes"]["decide"]}
                               for item in plan["infrastructure"]]})
    included, _dropped = bundle_nodes(analysis, tier, settings)
    documents = lookup.get_many([node["key"] for node in included])
    platforms = list(settings.get("platforms") or DEFAULT_PLATFORMS[tier])
    root = documents[analysis["root"]]
    app = {"name": content["scenario"], "version": root.get("version") or "0.0.0",
           "description": root.get("description", "")} | settings.get("app", {})
    services = _services(analysis, included, documents, plan, platforms, settings)
    document = {
        "schema_version": SCHEMA_VERSION,
        "target": tier,
        "app": app,
        "ipc": DEFAULT_IPC | settings.get("ipc", {}),
        "telemetry": DEFAULT_TELEMETRY | settings.get("telemetry", {}),
        "ports": {"default_range": DEFAULT_PORT_RANGE, "reserved": []} | settings.get("ports", {}),
        "swaps": _swaps(analysis, lookup),
        "secrets": [_manifest_secret(item) for item in plan["secrets"]],
        "services": services,
        "source": {"profile": profile, "profile_version": version, "catalog_snapshot": content["snapshot"],
                   "scenario": content["scenario"], "tier": tier, "platforms": platforms},
    }
    errors = validate_manifest(document)
    if errors:
        raise ManifestInvalid(f"The assembled manifest breaks the bundle-manifest schema at {errors[0]['pointer']}: "
                              f"{errors[0]['message']}.", extra={"errors": errors})
    return AssembledManifest(document=document, canonical=canonical_json(document),
                             sha256=canonical_sha256(document), secrets_plan=plan)


def _refuse_undeployable(analysis: dict, tier: str) -> None:
    fitness = analysis["fitness"][tier]
    if fitness["deployable"]:
        return
    helpful = [suggestion["summary"] for suggestion in analysis["swap_suggestions"]
               if suggestion["available"] and suggestion["effect"][tier]["deployable_after"]]
    detail = f"{analysis['scenario']} is not deployable on {tier}: " + "; ".join(fitness["explanation"][1:])
    if helpful:
        detail += ". Swaps that make it deployable: " + "; ".join(helpful)
    raise NotDeployable(detail, extra={"blocking": fitness["blocking"], "explanation": fitness["explanation"],
                                       "swaps": helpful, "missing": analysis["missing"],
                                       "invalid": analysis["invalid"],
                                       "version_problems": analysis["version_problems"]})


def _swaps(analysis: dict, lookup: EntryLookup) -> list[dict]:
    """The profile's swaps, each with the relationship and notes of the declaration that offered it."""
    edges_by_original: dict[str, list[dict]] = {}
    for edge in analysis["edges"]:
        if edge["swapped_from"]:
            edges_by_original.setdefault(edge["swapped_from"], []).append(edge)
    swaps = []
    for original, replacement in sorted(analysis["swaps"].items()):
        original_keys = [key for key in edges_by_original if key.split(":", 1)[1] == original]
        sources = [edge["from"] for key in original_keys for edge in edges_by_original[key]]
        documents = lookup.get_many(sorted({*sources, *original_keys}))
        options = [option for key in original_keys for source in sources
                   for option in (documents.get(source) or {}).get("declared_swaps", {}).get(key, [])]
        options += [option for key in original_keys for option in (documents.get(key) or {}).get("swappable_with", [])]
        declared = next((option for option in options if option["id"] == replacement), None)
        entry = {"original": original, "replacement": replacement,
                 "reason": (declared or {}).get("relationship") or "chosen in the deployment profile"}
        if declared and declared.get("notes"):
            entry["limitations"] = declared["notes"]
        swaps.append(entry)
    return swaps


def _manifest_secret(item: dict) -> dict:
    secret = {"id": item["id"], "class": item["class"], "required": item["required"], "target": item["target"]}
    if item["description"]:
        secret["description"] = item["description"]
    for key in ("generator", "prompt", "remote"):
        if key in item:
            secret[key] = item[key]
    if item["derived_env"]:
        secret["derived_env"] = item["derived_env"]
    return secret


def _extension(platform: str) -> str:
    return ".exe" if platform.startswith("win-") else ""


def _services(analysis: dict, included: list[dict], documents: dict, plan: dict, platforms: list[str],
              settings: dict) -> list[dict]:
    included_keys = {node["key"] for node in included}
    nodes = {node["key"]: node for node in included}
    planned = {item["id"] for item in plan["secrets"]}
    children: dict[str, list[str]] = {}
    for edge in analysis["edges"]:
        if edge["from"] in included_keys and edge["to"] in included_keys and edge["to"] not in children.get(
                edge["from"], []):
            children.setdefault(edge["from"], []).append(edge["to"])
    secrets_of = {key: _service_secrets(key, children, nodes, documents, planned) for key in included_keys}
    service_ids: dict[str, list[str]] = {}  # node key → the ids of its services (empty: not a process)
    services = []
    for key in [node["key"] for node in analysis["nodes"] if node["key"] in included_keys]:
        node, document = nodes[key], documents[key]
        uses = [child for child in children.get(key, []) if not service_ids.get(child)]
        depends = sorted({sid for child in children.get(key, []) for sid in service_ids.get(child, [])[:1]})
        if node["kind"] == "scenario":
            created = _scenario_services(node, document, depends, uses, secrets_of.get(key, []), platforms, settings,
                                         nodes)
        elif node["runs_as"] == "service":
            created = [_resource_service(node, document, depends, secrets_of.get(key, []), platforms, settings)]
        else:
            created = []
        service_ids[key] = [service["id"] for service in created]
        services.extend(created)
    root_services = service_ids.get(analysis["root"]) or ([services[0]["id"]] if services else [])
    by_id = {service["id"]: service for service in services}
    for index, asset in enumerate(settings.get("assets", [])):
        wanted = asset.get("service") or (root_services[0] if root_services else None)
        if wanted not in by_id:
            pointer = f"/settings/assets/{index}/service"
            raise ManifestInvalid(f"{pointer}: no service {wanted!r} in this manifest for the asset {asset['path']!r}.",
                                  field=pointer, extra={"errors": [{"pointer": pointer, "keyword": "reference",
                                                                    "message": f"no service {wanted!r}"}]})
        by_id[wanted].setdefault("assets", []).append({k: v for k, v in asset.items() if k != "service"})
    for service in services:
        if "assets" in service:
            service["assets"] = sorted(service["assets"], key=lambda item: item["path"])
    return services


def _service_secrets(key: str, children: dict, nodes: dict, documents: dict, planned: set[str]) -> list[str]:
    """The planned secrets a node's services receive: its own; all those of the libraries, hosted APIs and host
    tools it uses (it calls them itself); the exported ones of the services it depends on (to connect to them)."""
    names = {secret["id"] for secret in documents[key].get("secrets", [])}
    for child in children.get(key, []):
        in_process = nodes[child]["kind"] == "resource" and nodes[child]["runs_as"] != "service"
        names |= {secret["id"] for secret in documents[child].get("secrets", [])
                  if in_process or secret.get("exported")}
    return sorted(names & planned)


def _metadata(node: dict, document: dict, uses: list[str], nodes: dict) -> dict:
    metadata = {"catalog_path": document["path"], "requirements": node["requirements"],
                "optional": not node["required"]}
    if uses:
        metadata["uses"] = [{"key": child, "runs_as": nodes[child]["runs_as"]} for child in sorted(uses)]
    return metadata


def _scenario_services(node, document, depends, uses, secrets, platforms, settings, nodes) -> list[dict]:
    name = node["name"]
    ports = {port["name"]: port for port in document.get("ports", [])}
    checks = {check["port_name"]: check for check in document.get("health", []) if check["port_name"]}
    components = document.get("components") or []
    created = []
    api_id = None
    for component in components:
        service_id = f"{name}-{component['id']}"
        role = component["role"]
        build_type = component["build"]["type"]
        port_name = component.get("port") or ""
        if role == "ui":
            binaries = {platform: {"path": f"ui/{service_id}/index.html"} for platform in platforms}
            build = {"type": build_type, "source_dir": component["build"]["source_dir"],
                     "output_pattern": f"ui/{service_id}"}
        else:
            binaries = {platform: {"path": f"bin/{service_id}/{platform}/{service_id}{_extension(platform)}"}
                        for platform in platforms}
            build = {"type": build_type, "source_dir": component["build"]["source_dir"], "entry_point": ".",
                     "output_pattern": f"bin/{service_id}/{{{{platform}}}}/{service_id}{{{{ext}}}}"}
            if build_type == "go":
                build["env"] = {"CGO_ENABLED": "0"}
        env = {key: value for key, value in document.get("env", {}).items()}
        service = {"id": service_id, "type": _ROLE_TYPES.get(role, "worker"),
                   "description": f"{document.get('display_name') or name}: {component['id']}",
                   "binaries": binaries, "build": build}
        if port_name:
            port = ports.get(port_name, {})
            if port.get("env_var"):
                env[port["env_var"]] = f"${{{service_id}.{port_name}}}"
            service["ports"] = {"requested": [{"name": port_name, "range": port.get("range") or DEFAULT_PORT_RANGE}]}
        env.update(settings.get("env", {}).get(service_id, {}))
        service["env"] = env
        service["secrets"] = sorted(secrets)
        check = checks.get(port_name)
        if check:
            service["health"] = {"type": check["type"], "path": check["path"] or "/", "port_name": port_name,
                                 "interval_ms": check["interval_ms"], "timeout_ms": check["timeout_ms"], "retries": 3}
        elif port_name:
            service["health"] = {"type": "http", "path": "/health", "port_name": port_name, "interval_ms": 2000,
                                 "timeout_ms": 5000, "retries": 5}
        else:
            service["health"] = {"type": "log_match"}
        service["readiness"] = {"type": "dependencies_ready" if role == "ui" and api_id else "health_success",
                                "timeout_ms": 30000}
        if role == "ui" and api_id:
            service["dependencies"] = sorted({*depends, api_id})
        else:
            service["dependencies"] = list(depends)
        service["data_dirs"] = [f"data/{service_id}"]
        service["log_dir"] = f"logs/{service_id}"
        service["critical"] = node["required"]
        service["metadata"] = _metadata(node, document, uses, nodes)
        if node["requirements"].get("gpu"):
            service["gpu"] = {"requirement": "required"}
        if role == "api" and api_id is None:
            api_id = service_id
        created.append(service)
    if created:
        for asset in document.get("assets", []):
            owner = next((service for service in created
                          if asset["path"].startswith(f"{service['id'].removeprefix(name + '-')}/")), created[0])
            owner.setdefault("assets", []).append(dict(asset))
    return created


def _resource_service(node, document, depends, secrets, platforms, settings) -> dict:
    name = node["name"]
    ports = document.get("ports", [])
    check = (document.get("health") or [None])[0]
    if check and check["type"] in ("http", "tcp"):
        health = {"type": check["type"], "port_name": check["port_name"] or (ports[0]["name"] if ports else ""),
                  "interval_ms": check["interval_ms"], "timeout_ms": check["timeout_ms"], "retries": 5}
        if check["type"] == "http":
            health["path"] = check["path"] or "/"
    elif ports:
        health = {"type": "tcp", "port_name": ports[0]["name"], "interval_ms": 2000, "timeout_ms": 5000, "retries": 5}
    else:
        health = {"type": "log_match"}
    service = {
        "id": name, "type": "resource",
        "description": document.get("display_name") or name,
        "binaries": {platform: {"path": f"resources/{name}/{platform}/{name}{_extension(platform)}"}
                     for platform in platforms},
        "env": {**document.get("env", {}), **settings.get("env", {}).get(name, {})},
        "secrets": sorted(secrets),
        "health": health,
        "readiness": {"type": "health_success", "timeout_ms": 60000},
        "dependencies": list(depends),
        "data_dirs": [f"data/{name}"],
        "log_dir": f"logs/{name}",
        "critical": node["required"],
        "metadata": {"catalog_path": document["path"], "requirements": node["requirements"],
                     "optional": not node["required"]},
    }
    if ports:
        service["ports"] = {"requested": [{"name": port["name"], "range": DEFAULT_PORT_RANGE} for port in ports]}
    if document.get("assets"):
        service["assets"] = [dict(asset) for asset in document["assets"]]
    if node["requirements"].get("gpu"):
        service["gpu"] = {"requirement": "required"}
    return service
