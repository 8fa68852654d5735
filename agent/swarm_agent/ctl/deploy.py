"""`swarmctl scenario|profile|manifest`: the deployment manager from the command line (docs/deployments.md).

    swarmctl scenario import ./vrooli [--tenant acme] [--strict]      # a directory (its catalog files) or a .tar.gz
    swarmctl scenario import --git https://github.com/Vrooli/Vrooli --ref main      # cloned on the worker, polled
    swarmctl scenario analyze picker-wheel --snapshot <sha256> [--tier desktop] [--swap postgres=sqlite]
    swarmctl profile create wheel --snapshot <sha256> --scenario picker-wheel --tier desktop [--swap a=b]
    swarmctl profile show 7 [--versions]
    swarmctl profile diff 7 [--from 1] [--to 3]
    swarmctl profile swap 7 postgres sqlite          # --remove postgres drops a swap
    swarmctl profile set 7 [--tier server] [--settings '{"platforms": ["linux-x64"]}'] [--secret ID=CLASS]
    swarmctl manifest assemble 7 [-o bundle.json]    # from the profile's current version
    swarmctl manifest validate bundle.json
    swarmctl manifest export 7 -o bundle.json        # the canonical bytes; their sha256 on stderr

A refusal prints the server's sentence and its structured details (the cycle, each infrastructure
secret and the swap that removes it, each schema error with its JSON pointer) and exits 1.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from swarm_agent.bundle_upload import MultipartFileBody
from swarm_agent.client import ApiConfig, api_client
from swarm_agent.ctl.bundle import UPLOAD_TIMEOUT_SECONDS, _add_common, _fail, _json_object

#: The catalog files of a tree (the server reads only these; everything else is left out of the upload).
CATALOG_PATHS = re.compile(r"(scenarios|resources)/[a-z0-9][a-z0-9._-]{0,99}/\.vrooli/service\.json"
                           r"|resources/[a-z0-9][a-z0-9._-]{0,99}/resource\.json")
FETCH_FINISHED = ("succeeded", "failed")


def register(subparsers) -> None:
    """Add `scenario`, `profile` and `manifest` to swarmctl."""
    scenario = subparsers.add_parser("scenario", help="Import scenario catalogs and analyse scenarios.")
    commands = scenario.add_subparsers(dest="scenario_command", required=True)
    imports = commands.add_parser("import", help="Import a catalog: a directory, a .tar.gz, or --git URL.")
    imports.add_argument("source", type=Path, nargs="?", help="A catalog tree (directory) or a .tar.gz of one.")
    imports.add_argument("--git", help="A git repository URL, cloned on the control plane's worker.")
    imports.add_argument("--ref", default="main", help="Branch, tag or commit of --git (default: main).")
    imports.add_argument("--tenant", help="Tenant slug (tokens bound to no tenant).")
    imports.add_argument("--strict", action="store_true", help="Refuse the whole import on any file's error.")
    imports.add_argument("--no-wait", action="store_true", help="With --git: print the fetch and do not poll it.")
    _add_common(imports, quiet=False)
    imports.set_defaults(handler=handle_scenario_import)
    analyze = commands.add_parser("analyze", help="DAG, requirements, fitness per tier and swap suggestions.")
    analyze.add_argument("scenario")
    analyze.add_argument("--snapshot", required=True, help="The catalog snapshot's sha256.")
    analyze.add_argument("--tier", help="One tier only (local, desktop, mobile, saas, server, enterprise).")
    analyze.add_argument("--swap", action="append", default=[], metavar="ORIGINAL=REPLACEMENT")
    _add_common(analyze, quiet=False)
    analyze.set_defaults(handler=handle_scenario_analyze)

    profile = subparsers.add_parser("profile", help="Deployment profiles: every change is a new version.")
    commands = profile.add_subparsers(dest="profile_command", required=True)
    create = commands.add_parser("create", help="Create a profile (its version 1).")
    create.add_argument("slug")
    create.add_argument("--snapshot", required=True)
    create.add_argument("--scenario", required=True)
    create.add_argument("--tier", required=True)
    create.add_argument("--tenant")
    create.add_argument("--name", default="")
    create.add_argument("--swap", action="append", default=[], metavar="ORIGINAL=REPLACEMENT")
    create.add_argument("--settings", type=_json_object, default=None, help="Settings as a JSON object.")
    create.add_argument("--note", default="")
    _add_common(create, quiet=False)
    create.set_defaults(handler=handle_profile_create)
    show = commands.add_parser("show", help="Show a profile and its current version.")
    show.add_argument("profile_id", type=int)
    show.add_argument("--versions", action="store_true", help="Also list every version.")
    _add_common(show, quiet=False)
    show.set_defaults(handler=handle_profile_show)
    diff = commands.add_parser("diff", help="What changed between two versions.")
    diff.add_argument("profile_id", type=int)
    diff.add_argument("--from", dest="from_version", type=int)
    diff.add_argument("--to", dest="to_version", type=int)
    _add_common(diff, quiet=False)
    diff.set_defaults(handler=handle_profile_diff)
    swap = commands.add_parser("swap", help="Swap a dependency for another (a new version).")
    swap.add_argument("profile_id", type=int)
    swap.add_argument("original")
    swap.add_argument("replacement", nargs="?")
    swap.add_argument("--remove", action="store_true", help="Drop the swap of ORIGINAL.")
    swap.add_argument("--note", default="")
    _add_common(swap, quiet=False)
    swap.set_defaults(handler=handle_profile_swap)
    change = commands.add_parser("set", help="Change tier, scenario, snapshot, settings or secrets decisions.")
    change.add_argument("profile_id", type=int)
    change.add_argument("--tier")
    change.add_argument("--scenario")
    change.add_argument("--snapshot")
    change.add_argument("--settings", type=_json_object)
    change.add_argument("--secret", action="append", default=[], metavar="ID=CLASS|ID=JSON|ID=",
                        help="A secret's decision: a class, a JSON object, or nothing to remove it.")
    change.add_argument("--note", default="")
    _add_common(change, quiet=False)
    change.set_defaults(handler=handle_profile_set)

    manifest = subparsers.add_parser("manifest", help="Assemble, validate and export bundle.json.")
    commands = manifest.add_subparsers(dest="manifest_command", required=True)
    for verb, help_text in (("assemble", "Assemble bundle.json from a profile's current version."),
                            ("export", "Write the canonical bundle.json of a profile (its sha256 on stderr).")):
        parser = commands.add_parser(verb, help=help_text)
        parser.add_argument("profile_id", type=int)
        parser.add_argument("-o", "--output", type=Path, help="Write the canonical JSON here (export: - is stdout).")
        _add_common(parser, quiet=False)
        parser.set_defaults(handler=handle_manifest_assemble, verb=verb)
    validate = commands.add_parser("validate", help="Validate a bundle.json against the bundle-manifest schema.")
    validate.add_argument("file", type=Path)
    _add_common(validate, quiet=False)
    validate.set_defaults(handler=handle_manifest_validate)


def _client(args, **kwargs):
    return api_client(ApiConfig.from_env(args.url, args.token), **kwargs)


def _answer(response) -> dict | None:
    """The JSON of a success; for a refusal, print its sentence and structured details and answer None."""
    try:
        body = response.json()
    except ValueError:
        body = {"error": "http_error", "detail": response.text[:500] or f"HTTP {response.status_code}"}
    if response.status_code < 400:
        return body
    field = f" (field: {body['field']})" if body.get("field") else ""
    print(f"error: {body.get('error', 'http_error')}: {body.get('detail', '')}{field}", file=sys.stderr)
    if body.get("cycle"):
        print(f"  cycle: {' → '.join(body['cycle'])}", file=sys.stderr)
    for secret in body.get("secrets", []):
        swaps = " or ".join(f"{swap['original']} → {swap['replacement']}" for swap in secret.get("swaps", []))
        print(f"  infrastructure secret {secret.get('id')}: swap {swaps or '(no swap removes it)'}; or decide "
              f"{secret.get('decide', '')}", file=sys.stderr)
    for error in body.get("errors", []) + body.get("problems", []):
        where = error.get("pointer", "")
        print(f"  {error.get('path', '')}{'#' if error.get('path') else ''}{where}: {error.get('message')}",
              file=sys.stderr)
    return None


def _pairs(values: list[str], flag: str) -> dict[str, str] | None:
    pairs = {}
    for value in values:
        original, _, replacement = value.partition("=")
        if not original or not replacement:
            _fail("invalid", f"{flag} takes ORIGINAL=REPLACEMENT, not {value!r}")
            return None
        pairs[original] = replacement
    return pairs


def _json_out(args, body) -> bool:
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    return args.json


def pack_catalog(source: Path, target: Path) -> int:
    """Write the catalog files of `source` into a reproducible .tar.gz at `target`; the number of files.

    Only regular files at catalog paths go in (symlinks are never followed), sorted, with fixed
    owners, modes and times, so the same tree always packs to the same bytes.
    """
    files = sorted(path for path in source.rglob("*")
                   if CATALOG_PATHS.fullmatch(path.relative_to(source).as_posix())
                   and path.is_file() and not path.is_symlink())
    with open(target, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(source).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return len(files)


def _print_import(result: dict) -> None:
    snapshot = result["snapshot"]
    state = "imported" if result.get("created") else "already imported"
    print(f"snapshot {snapshot['sha256']} ({state}): {snapshot['scenario_count']} scenarios, "
          f"{snapshot['resource_count']} resources, {snapshot['invalid_count']} invalid")
    for problem in result.get("problems", []):
        print(f"  {problem['severity']}: {problem['path']}#{problem['pointer']}: {problem['message']} "
              f"({problem['code']})")


def handle_scenario_import(args: argparse.Namespace) -> int:
    if bool(args.source) == bool(args.git):
        return _fail("invalid", "give a catalog directory or .tar.gz, or --git URL (one of them)")
    if args.git:
        return _import_git(args)
    if not args.source.exists():
        return _fail("not_found", f"{args.source} does not exist")
    with ExitStack() as stack:
        if args.source.is_dir():
            path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swarmctl-"))) / "catalog.tar.gz"
            if not pack_catalog(args.source, path):
                return _fail("empty_catalog", f"{args.source} has no scenarios/<name>/.vrooli/service.json, "
                                              "resources/<name>/resource.json or resources/<name>/.vrooli/service.json")
        else:
            path = args.source
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        fields = {"sha256": digest, **({"tenant": args.tenant} if args.tenant else {}),
                  **({"strict": "true"} if args.strict else {})}
        body = MultipartFileBody(fields, file_field="bundle", file_path=path, file_size=path.stat().st_size,
                                 file_name="catalog.tar.gz")
        with _client(args, timeout=UPLOAD_TIMEOUT_SECONDS) as client:
            response = client.post("/catalogs", content=body.iter_bytes(lambda sent: None),
                                   headers={"Content-Type": body.content_type,
                                            "Content-Length": str(body.content_length)})
    result = _answer(response)
    if result is None:
        return 1
    if not _json_out(args, result):
        _print_import(result)
    return 0


def _import_git(args: argparse.Namespace) -> int:
    with _client(args) as client:
        accepted = _answer(client.post("/catalogs", json={
            "git_url": args.git, "ref": args.ref, "strict": args.strict,
            **({"tenant": args.tenant} if args.tenant else {})}))
        if accepted is None:
            return 1
        print(f"fetch {accepted['fetch_id']} {accepted['status']}: {accepted['url']}", file=sys.stderr)
        fetch = {"state": accepted["status"]}
        while not args.no_wait and fetch["state"] not in FETCH_FINISHED:
            time.sleep(1.0)
            fetch = _answer(client.get(accepted["url"].removeprefix("/api/v1")))
            if fetch is None:
                return 1
    if args.no_wait:
        return 0
    if _json_out(args, fetch):
        return 0 if fetch["state"] == "succeeded" else 1
    if fetch["state"] == "failed":
        return _fail(fetch["error_code"], fetch["error_detail"])
    _print_import({"snapshot": fetch["snapshot"], "created": fetch["created"], "problems": fetch["problems"]})
    print(f"  from {fetch['git_url']} {fetch['ref']} at {fetch['commit_sha']}")
    return 0


def handle_scenario_analyze(args: argparse.Namespace) -> int:
    swaps = _pairs(args.swap, "--swap")
    if swaps is None:
        return 1
    params = [("snapshot", args.snapshot), *([("tier", args.tier)] if args.tier else []),
              *(("swap", f"{original}={replacement}") for original, replacement in swaps.items())]
    with _client(args) as client:
        analysis = _answer(client.get(f"/scenarios/{args.scenario}/analysis", params=params))
    if analysis is None:
        return 1
    if _json_out(args, analysis):
        return 0
    print(f"{analysis['root']}: {len(analysis['nodes'])} nodes, {len(analysis['edges'])} edges, "
          f"depth {analysis['max_depth']}")
    for node in analysis["nodes"]:
        optional = "" if node["required"] else " (optional)"
        print(f"  {'  ' * node['depth']}{node['key']} {node.get('version') or ''}{optional}")
    for item in analysis["missing"]:
        print(f"  missing: {item['key']} (needed by {', '.join(item['needed_by'])})")
    for problem in analysis["version_problems"]:
        print(f"  version: {problem['detail']}")
    required = analysis["requirements"]["required"]
    print(f"requirements: {required['ram_mb']} MB RAM, {required['disk_mb']} MB disk, {required['cpu_cores']} "
          f"cores{', GPU' if required['gpu'] else ''}")
    for tier, fitness in analysis["fitness"].items():
        print("\n".join(fitness["explanation"]))
    for suggestion in analysis["swap_suggestions"]:
        print(f"swap: {suggestion['summary']}")
    return 0


def _print_version(profile: dict) -> None:
    version = profile["current_version"]
    swaps = ", ".join(f"{a} → {b}" for a, b in version["swaps"].items()) or "none"
    print(f"profile {profile['id']} {profile['tenant']}/{profile['slug']} v{version['number']}: "
          f"{version['scenario']} on {version['tier']}, swaps {swaps}, snapshot {version['snapshot'][:12]}…")


def _print_change(change: dict) -> None:
    version = change["version"]
    if not change["created"]:
        print(f"unchanged: v{version['number']} already says that")
        return
    print(f"v{version['number']} by {version['created_by']}: {version['note']}")
    for item in change["changes"]:
        print(f"  {item['op']} {item['pointer']}: {json.dumps(item['old'])} → {json.dumps(item['new'])}")


def handle_profile_create(args: argparse.Namespace) -> int:
    swaps = _pairs(args.swap, "--swap")
    if swaps is None:
        return 1
    body = {"slug": args.slug, "snapshot": args.snapshot, "scenario": args.scenario, "tier": args.tier,
            "swaps": swaps, "note": args.note, "name": args.name,
            **({"tenant": args.tenant} if args.tenant else {}),
            **({"settings": args.settings} if args.settings is not None else {})}
    with _client(args) as client:
        profile = _answer(client.post("/profiles", json=body))
    if profile is None:
        return 1
    if not _json_out(args, profile):
        _print_version(profile)
    return 0


def handle_profile_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        profile = _answer(client.get(f"/profiles/{args.profile_id}"))
        versions = _answer(client.get(f"/profiles/{args.profile_id}/versions")) if args.versions else None
    if profile is None or (args.versions and versions is None):
        return 1
    if _json_out(args, {"profile": profile, **({"versions": versions["results"]} if versions else {})}):
        return 0
    _print_version(profile)
    for version in (versions or {}).get("results", []):
        print(f"  v{version['number']} {version['created_at']} {version['created_by']}: {version['note']}")
    return 0


def handle_profile_diff(args: argparse.Namespace) -> int:
    params = {key: value for key, value in (("from", args.from_version), ("to", args.to_version)) if value}
    with _client(args) as client:
        diff = _answer(client.get(f"/profiles/{args.profile_id}/diff", params=params))
    if diff is None:
        return 1
    if _json_out(args, diff):
        return 0
    print(f"{diff['profile']} v{diff['from']} → v{diff['to']} ({diff['created_by']}, {diff['created_at']}): "
          f"{diff['note']}")
    for item in diff["changes"] or [{"op": "no", "pointer": "change", "old": None, "new": None}]:
        print(f"  {item['op']} {item['pointer']}: {json.dumps(item['old'])} → {json.dumps(item['new'])}")
    return 0


def handle_profile_swap(args: argparse.Namespace) -> int:
    if bool(args.replacement) == args.remove:
        return _fail("invalid", "give ORIGINAL REPLACEMENT, or ORIGINAL --remove")
    with _client(args) as client:
        change = _answer(client.post(f"/profiles/{args.profile_id}/swap", json={
            "original": args.original, "replacement": None if args.remove else args.replacement, "note": args.note}))
    if change is None:
        return 1
    if not _json_out(args, change):
        _print_change(change)
    return 0


def _decisions(values: list[str]) -> dict | None:
    decisions = {}
    for value in values:
        secret_id, _, decision = value.partition("=")
        if not secret_id:
            _fail("invalid", f"--secret takes ID=CLASS, ID=JSON or ID=, not {value!r}")
            return None
        if not decision:
            decisions[secret_id] = None
        elif decision.startswith("{"):
            try:
                decisions[secret_id] = json.loads(decision)
            except json.JSONDecodeError as error:
                _fail("invalid", f"--secret {secret_id}: not a JSON object ({error.msg})")
                return None
        else:
            decisions[secret_id] = {"class": decision}
    return decisions


def handle_profile_set(args: argparse.Namespace) -> int:
    decisions = _decisions(args.secret)
    if decisions is None:
        return 1
    fields = {key: value for key, value in (("tier", args.tier), ("scenario", args.scenario),
                                            ("snapshot", args.snapshot), ("settings", args.settings))
              if value is not None}
    calls = ([fields] if fields else []) + ([{"secret_decisions": decisions}] if decisions else [])
    if not calls:
        return _fail("invalid", "give --tier, --scenario, --snapshot, --settings or --secret")
    with _client(args) as client:
        for body in calls:
            change = _answer(client.post(f"/profiles/{args.profile_id}/set", json={**body, "note": args.note}))
            if change is None:
                return 1
            if not _json_out(args, change):
                _print_change(change)
    return 0


def handle_manifest_assemble(args: argparse.Namespace) -> int:
    with _client(args) as client:
        assembled = _answer(client.post(f"/profiles/{args.profile_id}/manifest"))
    if assembled is None:
        return 1
    canonical = assembled["canonical"].encode("ascii")
    if args.output and str(args.output) != "-":
        args.output.write_bytes(canonical)
    elif args.verb == "export":
        sys.stdout.buffer.write(canonical)
        sys.stdout.flush()
    if args.verb == "export":
        print(f"sha256 {assembled['sha256']}  {assembled['size_bytes']} bytes", file=sys.stderr)
        return 0
    if _json_out(args, assembled["manifest"]):
        return 0
    manifest = assembled["manifest"]
    print(f"bundle.json of profile {assembled['profile']} v{assembled['version']}: sha256 {assembled['sha256']}, "
          f"{assembled['size_bytes']} bytes")
    print(f"  {manifest['app']['name']} {manifest['app']['version']} for {manifest['target']}: "
          f"{len(manifest['services'])} services, {len(manifest['secrets'])} secrets, "
          f"platforms {', '.join(manifest['source']['platforms'])}")
    for service in manifest["services"]:
        print(f"  service {service['id']} ({service['type']})")
    for secret in manifest["secrets"]:
        print(f"  secret {secret['id']}: {secret['class']}")
    return 0


def handle_manifest_validate(args: argparse.Namespace) -> int:
    try:
        document = json.loads(args.file.read_bytes())
    except (OSError, ValueError) as error:
        return _fail("invalid", f"{args.file}: {error}")
    with _client(args) as client:
        result = _answer(client.post("/manifests/validate", json={"manifest": document}))
    if result is None:
        return 1
    if _json_out(args, result):
        return 0 if result["valid"] else 1
    if result["valid"]:
        print(f"valid: {args.file} (canonical sha256 {result['sha256']})")
        return 0
    print(f"invalid: {args.file}: {len(result['errors'])} errors", file=sys.stderr)
    for error in result["errors"]:
        print(f"  {error['pointer'] or '/'}: {error['message']}", file=sys.stderr)
    return 1
