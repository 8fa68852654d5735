"""`swarmctl bundle push|pack|info`: pack, upload and inspect bundles.

    swarmctl bundle push ./my-workflow --tenant acme --workflow hello --version 1.2.0 --activate
    swarmctl bundle pack ./my-workflow -o hello.tar.gz
    swarmctl bundle info <sha256>
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from swarm_agent.bundle_safety import BundleRejected
from swarm_agent.bundle_upload import BundlePush, push_bundle
from swarm_agent.client import ApiConfig, api_client, raise_for_api_error
from swarm_agent.packing import file_sha256, pack_directory

UPLOAD_TIMEOUT_SECONDS = 900.0


def register(subparsers) -> None:
    """Add `bundle` and its subcommands to swarmctl."""
    bundle = subparsers.add_parser("bundle", help="Pack, upload and inspect workflow bundles.")
    commands = bundle.add_subparsers(dest="bundle_command", required=True)

    push = commands.add_parser(
        "push", help="Upload a directory (packed reproducibly) or a .tar.gz and register it as a version.",
    )
    push.add_argument("source", type=Path, help="A directory to pack, or a .tar.gz to send as it is.")
    push.add_argument("--tenant", required=True, help="Tenant slug (must exist unless --create-tenant).")
    push.add_argument("--create-tenant", action="store_true",
                      help="Create the tenant if it does not exist (tokens bound to no tenant).")
    push.add_argument("--workflow", required=True, help="Workflow slug (created on first push).")
    push.add_argument("--version", required=True, help="Semantic version of this bundle, e.g. 1.2.0.")
    push.add_argument("--metadata", type=_json_object, help="A JSON object stored with the version.")
    push.add_argument("--activate", action="store_true", default=None,
                      help="Make this version active (the first version of a workflow always is).")
    push.add_argument("--runtime", help="Runtime of a workflow this push creates (node20, python311, custom).")
    push.add_argument("--entrypoint", help="Entrypoint of a workflow this push creates.")
    push.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                      help="Leave out paths matching this glob when packing a directory (repeatable).")
    push.add_argument("--multipart", action="store_true",
                      help="Use the multipart POST /bundles endpoint instead of the raw PUT.")
    _add_common(push)
    push.set_defaults(handler=handle_push)

    pack = commands.add_parser("pack", help="Pack a directory reproducibly into a .tar.gz and print its sha256.")
    pack.add_argument("source", type=Path, help="The directory to pack.")
    pack.add_argument("-o", "--output", type=Path, required=True, help="Where to write the .tar.gz.")
    pack.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                      help="Leave out paths matching this glob (repeatable).")
    pack.add_argument("--json", action="store_true", help="Print JSON instead of the bare digest.")
    pack.set_defaults(handler=handle_pack)

    info = commands.add_parser("info", help="Describe a stored bundle (size, members, download URL).")
    info.add_argument("sha256", help="The bundle's sha256 hex digest.")
    _add_common(info, quiet=False)
    info.set_defaults(handler=handle_info)


def _add_common(parser: argparse.ArgumentParser, *, quiet: bool = True) -> None:
    parser.add_argument("--url", help="Control plane URL (default: $SWARM_URL).")
    parser.add_argument("--token", help="API token (default: $SWARM_TOKEN).")
    parser.add_argument("--json", action="store_true", help="Print the server's JSON.")
    if quiet:
        parser.add_argument("-q", "--quiet", action="store_true", help="No progress bar.")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _fail(code: str, detail: str) -> int:
    print(f"error: {code}: {detail}", file=sys.stderr)
    return 1


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _progress(quiet: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=console, transient=False,
        disable=quiet or not console.is_terminal,
    )


def pack_source(source: Path, stack: ExitStack, *, exclude: tuple[str, ...] = ()) -> tuple[Path, str, int]:
    """(path, sha256, size) of what to upload: a directory packed reproducibly into a temp dir that lives as
    long as `stack`, or a .tar.gz as it is. Raises BundleRejected / ValueError for what cannot be packed."""
    if source.is_dir():
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swarmctl-")))
        packed = pack_directory(source, workdir / "bundle.tar.gz", exclude=exclude)
        return packed.path, packed.sha256, packed.size
    digest, size = file_sha256(source)
    return source, digest, size


def handle_push(args: argparse.Namespace) -> int:
    """Pack (when given a directory), hash, upload with progress and print the registered version."""
    source: Path = args.source
    if not source.exists():
        return _fail("not_found", f"{source} does not exist")
    with ExitStack() as stack:
        try:
            path, digest, size = pack_source(source, stack, exclude=tuple(args.exclude))
        except BundleRejected as rejected:
            return _fail(rejected.code, rejected.detail)
        except ValueError as exc:
            return _fail("empty_bundle", str(exc))
        push = BundlePush(
            path=path, sha256=digest, size=size, tenant=args.tenant, workflow=args.workflow,
            version=args.version, metadata=args.metadata, activate=args.activate, runtime=args.runtime,
            entrypoint=args.entrypoint, create_tenant=args.create_tenant,
        )
        config = ApiConfig.from_env(args.url, args.token)
        with api_client(config, timeout=UPLOAD_TIMEOUT_SECONDS) as client, _progress(args.quiet) as progress:
            task = progress.add_task(f"{args.tenant}/{args.workflow} {args.version}", total=size)
            status, version = push_bundle(
                client, push, on_progress=lambda sent: progress.advance(task, sent), raw=not args.multipart,
            )
    if args.json:
        print(json.dumps(version, indent=2, sort_keys=True))
        return 0
    label = f"{version['tenant']}/{version['workflow']} {version['version']}"
    state = "active" if version.get("is_active") else "inactive"
    if version.get("deduplicated"):
        print(f"deduplicated: {label} already holds these bytes (version id {version['id']}, "
              f"sha256 {version['bundle_hash']}, {state})")
    else:
        print(f"registered {label} (version id {version['id']}, sha256 {version['bundle_hash']}, "
              f"{_human_size(version['bundle_size'])}, {state})")
    return 0 if status in (200, 201) else 1


def handle_pack(args: argparse.Namespace) -> int:
    """Pack a directory and print the bundle's sha256."""
    if not args.source.is_dir():
        return _fail("not_a_directory", f"{args.source} is not a directory")
    try:
        packed = pack_directory(args.source, args.output, exclude=tuple(args.exclude))
    except BundleRejected as rejected:
        args.output.unlink(missing_ok=True)
        return _fail(rejected.code, rejected.detail)
    except ValueError as exc:
        return _fail("empty_bundle", str(exc))
    if args.json:
        print(json.dumps({"path": str(packed.path), "sha256": packed.sha256, "size": packed.size,
                          "member_count": packed.member_count}, indent=2))
    else:
        print(packed.sha256)
    return 0


def handle_info(args: argparse.Namespace) -> int:
    """Print what the control plane stores under a digest."""
    digest = args.sha256.strip().lower()
    with api_client(ApiConfig.from_env(args.url, args.token)) as client:
        response = client.get(f"/bundles/{digest}")
        raise_for_api_error(response)
        bundle = response.json()
    if args.json:
        print(json.dumps(bundle, indent=2, sort_keys=True))
    else:
        print(f"sha256   {bundle['sha256']}\nsize     {_human_size(bundle['size'])} ({bundle['size']} bytes)\n"
              f"members  {bundle['member_count']} ({_human_size(bundle['unpacked_size'])} unpacked)\n"
              f"created  {bundle['created_at']}\nurl      {bundle['url']}")
    return 0

