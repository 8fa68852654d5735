"""`swarmctl payload|release|rollout`: push payloads, cut releases, run and follow rollouts.

    swarmctl payload push ./toolchain --type toolchain --version 1.4.0
    swarmctl payload list [--type toolchain]
    swarmctl release create --from-current --payload toolchain=1.4.0
    swarmctl release show v2026.12.01 [--manifest]
    swarmctl rollout start --type toolchain --version 1.4.0 --all --max-parallel 10 --canary 1 --auto-promote
    swarmctl rollout status 12 --follow        # exit code: 0 succeeded, 1 failed/aborted, 3 reverted
    swarmctl rollout pause|resume|promote|abort|revert 12
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from swarm_agent.bundle_safety import BundleRejected
from swarm_agent.bundle_upload import MultipartFileBody
from swarm_agent.client import ApiConfig, api_client, get_all, raise_for_api_error
from swarm_agent.ctl.bundle import UPLOAD_TIMEOUT_SECONDS, _add_common, _fail, _human_size, _progress, pack_source

FINISHED = {"succeeded": 0, "failed": 1, "aborted": 1, "reverted": 3}


def register(subparsers) -> None:
    """Add `payload`, `release` and `rollout` to swarmctl."""
    payload = subparsers.add_parser("payload", help="Push and list payload versions (what drones run).")
    commands = payload.add_subparsers(dest="payload_command", required=True)
    push = commands.add_parser("push", help="Upload a directory (packed reproducibly) or a .tar.gz as a payload "
                                            "version.")
    push.add_argument("source", type=Path)
    push.add_argument("--type", required=True, dest="payload_type", help="Payload type, e.g. toolchain.")
    push.add_argument("--version", required=True, help="semver or vYYYY.MM.DD[.N]")
    push.add_argument("--notes", default="")
    push.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    _add_common(push)
    push.set_defaults(handler=handle_payload_push)
    listing = commands.add_parser("list", help="List payload versions.")
    listing.add_argument("--type", dest="payload_type")
    _add_common(listing, quiet=False)
    listing.set_defaults(handler=handle_payload_list)

    release = subparsers.add_parser("release", help="Create and show releases (manifests of payload versions).")
    commands = release.add_subparsers(dest="release_command", required=True)
    create = commands.add_parser("create", help="Create an immutable release.")
    create.add_argument("--name", help="vYYYY.MM.DD[.N] (default: the next free one of today)")
    create.add_argument("--from-current", action="store_true", help="Start from what the fleet runs now.")
    create.add_argument("--payload", action="append", default=[], metavar="TYPE=VERSION")
    create.add_argument("--notes", default="")
    _add_common(create, quiet=False)
    create.set_defaults(handler=handle_release_create)
    show = commands.add_parser("show", help="Show a release (or the latest).")
    show.add_argument("name", nargs="?")
    show.add_argument("--manifest", action="store_true", help="Print the canonical manifest JSON as downloaded.")
    _add_common(show, quiet=False)
    show.set_defaults(handler=handle_release_show)

    rollout = subparsers.add_parser("rollout", help="Start, follow and steer rollouts.")
    commands = rollout.add_subparsers(dest="rollout_command", required=True)
    start = commands.add_parser("start", help="Roll a payload version or a release out to drones.")
    start.add_argument("--type", dest="payload_type")
    start.add_argument("--version")
    start.add_argument("--release")
    group = start.add_mutually_exclusive_group(required=True)
    group.add_argument("--all", action="store_true", help="Every drone.")
    group.add_argument("--labels", help="Drones carrying all these comma-separated labels.")
    group.add_argument("--names", help="These comma-separated drone names.")
    start.add_argument("--max-parallel", type=int, default=1)
    start.add_argument("--canary", type=int, default=0)
    start.add_argument("--min-healthy-time", type=float, default=10.0)
    start.add_argument("--healthy-deadline", type=float, default=300.0)
    start.add_argument("--progress-deadline", type=float, default=600.0)
    start.add_argument("--auto-revert", action="store_true")
    start.add_argument("--auto-promote", action="store_true")
    start.add_argument("--failure-budget", default="0", help="Failed drones tolerated: 3 or 10%%.")
    start.add_argument("--follow", action="store_true", help="Follow it until it ends (exit code mirrors it).")
    _add_common(start, quiet=False)
    start.set_defaults(handler=handle_rollout_start)
    status = commands.add_parser("status", help="Show a rollout; --follow until it ends.")
    status.add_argument("rollout_id", type=int)
    status.add_argument("--follow", action="store_true")
    status.add_argument("--interval", type=float, default=1.0)
    _add_common(status, quiet=False)
    status.set_defaults(handler=handle_rollout_status)
    for verb in ("pause", "resume", "promote", "abort", "revert"):
        parser = commands.add_parser(verb, help=f"{verb.capitalize()} a rollout.")
        parser.add_argument("rollout_id", type=int)
        parser.add_argument("--follow", action="store_true")
        _add_common(parser, quiet=False)
        parser.set_defaults(handler=handle_rollout_verb, verb=verb)


def handle_payload_push(args: argparse.Namespace) -> int:
    """Pack (a directory), upload with progress, print the registered payload version."""
    if not args.source.exists():
        return _fail("not_found", f"{args.source} does not exist")
    with ExitStack() as stack:
        try:
            path, digest, size = pack_source(args.source, stack, exclude=tuple(args.exclude))
        except BundleRejected as rejected:
            return _fail(rejected.code, rejected.detail)
        except ValueError as exc:
            return _fail("empty_bundle", str(exc))
        fields = {"type": args.payload_type, "version": args.version, "notes": args.notes, "sha256": digest}
        body = MultipartFileBody(fields, file_field="bundle", file_path=path, file_size=size,
                                 file_name="payload.tar.gz")
        config = ApiConfig.from_env(args.url, args.token)
        with api_client(config, timeout=UPLOAD_TIMEOUT_SECONDS) as client, _progress(args.quiet) as progress:
            task = progress.add_task(f"{args.payload_type} {args.version}", total=size)
            response = client.post("/payload-versions", params={"sha256": digest},
                                   content=body.iter_bytes(lambda sent: progress.advance(task, sent)),
                                   headers={"Content-Type": body.content_type,
                                            "Content-Length": str(body.content_length)})
            raise_for_api_error(response)
            version = response.json()
    if args.json:
        print(json.dumps(version, indent=2, sort_keys=True))
    elif version.get("deduplicated"):
        print(f"deduplicated: {version['type']} {version['version']} already holds these bytes "
              f"(sha256 {version['sha256']})")
    else:
        print(f"pushed {version['type']} {version['version']} (id {version['id']}, sha256 {version['sha256']}, "
              f"{_human_size(version['size'])})")
    return 0


def handle_payload_list(args: argparse.Namespace) -> int:
    with api_client(ApiConfig.from_env(args.url, args.token)) as client:
        versions = get_all(client, "/payload-versions", {"type": args.payload_type} if args.payload_type else None)
    if args.json:
        print(json.dumps(versions, indent=2))
        return 0
    for version in versions:
        print(f"{version['type']:<20} {version['version']:<16} {version['sha256'][:16]}  {version['created_at']}")
    return 0


def handle_release_create(args: argparse.Namespace) -> int:
    payloads = {}
    for pair in args.payload:
        name, _, label = pair.partition("=")
        if not name or not label:
            return _fail("invalid", f"--payload takes TYPE=VERSION, not {pair!r}")
        payloads[name] = label
    with api_client(ApiConfig.from_env(args.url, args.token)) as client:
        response = client.post("/releases", json={"name": args.name or "", "from_current": args.from_current,
                                                  "payloads": payloads, "notes": args.notes})
        raise_for_api_error(response)
        release = response.json()
    if args.json:
        print(json.dumps(release, indent=2, sort_keys=True))
    else:
        _print_release(release)
    return 0


def _print_release(release: dict) -> None:
    print(f"release {release['name']}  sha256 {release['manifest_sha256']}")
    for item in release["manifest"]["payloads"]:
        print(f"  {item['type']:<20} {item['version']:<16} {item['sha256']}")


def handle_release_show(args: argparse.Namespace) -> int:
    with api_client(ApiConfig.from_env(args.url, args.token)) as client:
        name = args.name
        if not name:
            response = client.get("/releases", params={"limit": 1})
            raise_for_api_error(response)
            results = response.json()["results"]
            if not results:
                return _fail("not_found", "there is no release yet")
            name = results[0]["name"]
        if args.manifest:
            response = client.get(f"/releases/{name}/manifest")
            raise_for_api_error(response)
            sys.stdout.write(response.text + "\n")
            return 0
        response = client.get(f"/releases/{name}")
        raise_for_api_error(response)
        release = response.json()
    if args.json:
        print(json.dumps(release, indent=2, sort_keys=True))
    else:
        _print_release(release)
    return 0


def handle_rollout_start(args: argparse.Namespace) -> int:
    body = {"max_parallel": args.max_parallel, "canary": args.canary, "min_healthy_time": args.min_healthy_time,
            "healthy_deadline": args.healthy_deadline, "progress_deadline": args.progress_deadline,
            "auto_revert": args.auto_revert, "auto_promote": args.auto_promote,
            "failure_budget": args.failure_budget,
            "target": {"all": args.all, "labels": _split(args.labels), "names": _split(args.names)}}
    if args.release:
        body["release"] = args.release
    elif args.payload_type and args.version:
        body.update(payload_type=args.payload_type, version=args.version)
    else:
        return _fail("missing_field", "give --release, or --type and --version")
    with api_client(ApiConfig.from_env(args.url, args.token)) as client:
        response = client.post("/rollouts", json=body)
        raise_for_api_error(response)
        accepted = response.json()
        print(f"rollout {accepted['id']} started: {accepted['url']}", file=sys.stderr)
        return _show(client, accepted["id"], follow=args.follow, as_json=args.json)


def handle_rollout_status(args: argparse.Namespace) -> int:
    with api_client(ApiConfig.from_env(args.url, args.token)) as client:
        return _show(client, args.rollout_id, follow=args.follow, as_json=args.json, interval=args.interval)


def handle_rollout_verb(args: argparse.Namespace) -> int:
    with api_client(ApiConfig.from_env(args.url, args.token)) as client:
        response = client.post(f"/rollouts/{args.rollout_id}/{args.verb}")
        raise_for_api_error(response)
        print(f"rollout {args.rollout_id}: {args.verb} accepted ({response.json()['state']})", file=sys.stderr)
        return _show(client, args.rollout_id, follow=args.follow, as_json=args.json)


def _split(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _show(client, rollout_id: int, *, follow: bool, as_json: bool, interval: float = 1.0) -> int:
    """Print the rollout (and, following, each change); exit code 0 succeeded, 1 failed/aborted, 3 reverted,
    0 for a rollout still going when not following."""
    last = None
    while True:
        response = client.get(f"/rollouts/{rollout_id}")
        raise_for_api_error(response)
        rollout = response.json()
        progress = rollout["progress"]
        line = (f"rollout {rollout['id']} {rollout['subject']}: {rollout['state']}  "
                f"{progress['done']}/{progress['total']} ({progress['percent']:g}%)  "
                + " ".join(f"{state}={count}" for state, count in sorted(progress["states"].items())))
        if as_json and not follow:
            print(json.dumps(rollout, indent=2, sort_keys=True))
        elif line != last:
            print(line + (f"  — {rollout['state_reason']}" if rollout["state_reason"] else ""), flush=True)
            last = line
        if rollout["state"] in FINISHED:
            if follow and rollout["state"] != "succeeded":
                targets = get_all(client, f"/rollouts/{rollout_id}/targets")
                for target in targets:
                    if target["state"] in ("failed", "reverted", "skipped"):
                        print(f"  {target['drone']:<24} {target['type']:<16} {target['state']:<10} "
                              f"{target['reason']}")
            return FINISHED[rollout["state"]]
        if not follow:
            return 0
        time.sleep(interval)
