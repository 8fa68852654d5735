"""`swarmctl build`: trigger builds and follow their logs.

    swarmctl build trigger JOB [--branch B] [--sha SHA] [--param K=V] [--follow]   # JOB: tenant/name, name or id
    swarmctl build logs ID [-f] [--attempt N]
    swarmctl build show ID
    swarmctl build cancel ID

`trigger --follow` and `logs -f` stream the log until the build finishes and
exit with 0 when it succeeded, 1 otherwise.

A job is named `tenant/name` (`POST /tenants/<tenant>/jobs/<name>/trigger`,
never ambiguous), or by its bare name or id (`POST /jobs/<job>/trigger`: a
token bound to a tenant means its own job; for an admin token a name two
tenants use is refused as `ambiguous`, with the `tenant/name` URLs to use).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import quote

from swarm_agent.cli_common import api_command_group
from swarm_agent.client import ApiConfig, api_client, raise_for_api_error

FINISHED = {"success", "failed", "canceled"}


def register(subparsers) -> None:
    """Add `build` and its subcommands."""
    commands = api_command_group(subparsers, "build", "trigger builds, follow logs")

    trigger = commands.add_parser("trigger", help="queue a build of a job (tenant/name, name or id)")
    trigger.add_argument("job", help="tenant/name (unambiguous), or a job's name or id")
    trigger.add_argument("--branch", default="")
    trigger.add_argument("--sha", default="", help="exact commit to build")
    trigger.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="build parameter (an environment variable of the steps)")
    trigger.add_argument("--follow", "-f", action="store_true", help="stream the log; exit with the result")
    trigger.set_defaults(handler=trigger_command)

    logs = commands.add_parser("logs", help="print a build's log")
    logs.add_argument("build_id", type=int)
    logs.add_argument("--follow", "-f", action="store_true", help="keep streaming until the build finishes")
    logs.add_argument("--attempt", type=int, help="attempt number (default: the latest)")
    logs.set_defaults(handler=logs_command)

    show = commands.add_parser("show", help="describe a build as JSON")
    show.add_argument("build_id", type=int)
    show.set_defaults(handler=show_command)

    cancel = commands.add_parser("cancel", help="cancel a build")
    cancel.add_argument("build_id", type=int)
    cancel.set_defaults(handler=cancel_command)


def _client(args):
    return api_client(ApiConfig.from_env(args.url, args.token))


def job_path(job: str) -> str:
    """The API path of a job named `tenant/name`, or by its bare name or id."""
    tenant, separator, name = job.partition("/")
    if separator:
        return f"/tenants/{quote(tenant, safe='')}/jobs/{quote(name, safe='')}"
    return f"/jobs/{quote(job, safe='')}"


def trigger_command(args: argparse.Namespace) -> int:
    """Queue a build; with --follow, stream its log and return its result."""
    params = {}
    for item in args.param:
        name, separator, value = item.partition("=")
        if not separator or not name:
            print(f"error: --param {item!r} must be NAME=VALUE", file=sys.stderr)
            return 2
        params[name] = value
    body = {"branch": args.branch, "commit_sha": args.sha}
    if params:
        body["params"] = params
    with _client(args) as client:
        response = client.post(f"{job_path(args.job)}/trigger", json=body)
        raise_for_api_error(response)
        build = response.json()
        print(f"queued build {build['id']} ({build['job']['name']} #{build['number']}, branch {build['branch']})",
              file=sys.stderr)
        if not args.follow:
            print(build["id"])
            return 0
        return follow_log(client, build["id"], follow=True)


def logs_command(args: argparse.Namespace) -> int:
    """Print (and with -f, follow) a build's log."""
    with _client(args) as client:
        return follow_log(client, args.build_id, follow=args.follow, attempt=args.attempt)


def follow_log(client, build_id: int, *, follow: bool, attempt: int | None = None, interval: float = 0.5) -> int:
    """Stream the log from offset 0, following new attempts; returns 0 on success, 1 otherwise."""
    offset = 0
    current_attempt = attempt
    out = sys.stdout.buffer
    while True:
        query = {"offset": offset}
        if current_attempt:
            query["attempt"] = current_attempt
        response = client.get(f"/builds/{build_id}/log", params=query)
        raise_for_api_error(response)
        if response.content:
            out.write(response.content)
            out.flush()
        offset = int(response.headers.get("X-Log-Offset", offset + len(response.content)))
        state = response.headers.get("X-Build-State", "")
        latest = int(response.headers.get("X-Build-Latest-Attempt") or 0)
        if not follow:
            if response.content and offset < int(response.headers.get("X-Log-Size", offset)):
                continue  # a long log comes in several reads
            return 0 if state != "failed" else 1
        if attempt is None and latest and current_attempt and latest != current_attempt:
            # The build was retried: finish the old attempt's tail, then the new one from the start.
            final = client.get(f"/builds/{build_id}/log", params={"offset": offset, "attempt": current_attempt})
            out.write(final.content)
            sys.stderr.write(f"\n---- attempt {latest} ----\n")
            current_attempt, offset = latest, 0
            continue
        if current_attempt is None and latest:
            current_attempt = latest
        if state in FINISHED and not response.content:
            detail = client.get(f"/builds/{build_id}").json()
            reason = f" ({detail['failure_reason']})" if detail.get("failure_reason") else ""
            print(f"build {build_id}: {state}{reason}", file=sys.stderr)
            return 0 if state == "success" else 1
        if not response.content:
            time.sleep(interval)


def show_command(args: argparse.Namespace) -> int:
    """Print a build as JSON."""
    with _client(args) as client:
        response = client.get(f"/builds/{args.build_id}")
        raise_for_api_error(response)
        print(json.dumps(response.json(), indent=2))
    return 0


def cancel_command(args: argparse.Namespace) -> int:
    """Cancel a build."""
    with _client(args) as client:
        response = client.post(f"/builds/{args.build_id}/cancel")
        raise_for_api_error(response)
        print(f"build {args.build_id}: {response.json()['state']}", file=sys.stderr)
    return 0
