"""`swarmctl run TENANT/WORKFLOW [--runtime R] [--label L] [--env K=V] [--input K=V] [--follow]`: spawn an execution and tail it.

With `--follow` the command prints every event as it arrives (the
entrypoint's output on stdout/stderr, stage events on stderr) and exits with
the execution's exit code: the entrypoint's own, or 124 when it timed out,
130 when it was cancelled, 1 when it failed before running.
"""
from __future__ import annotations

import sys
import time

from swarm_agent.client import ApiConfig, api_client, get_all, raise_for_api_error

POLL_SECONDS = 0.5
EXIT_CODES = {"timed_out": 124, "cancelled": 130, "failed": 1, "succeeded": 0}


def register(subparsers) -> None:
    """Add the `run` subcommand."""
    parser = subparsers.add_parser("run", help="spawn an execution of a workflow's active version",
                                   description=__doc__)
    parser.add_argument("target", metavar="TENANT/WORKFLOW")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable (repeat)")
    parser.add_argument("--input", action="append", default=[], metavar="K=V", help="input value (repeat)")
    parser.add_argument("--runtime", help="where to run it: process, microvm, ... (default: the workflow's)")
    parser.add_argument("--label", action="append", default=None, dest="labels", metavar="LABEL",
                        help="the drone runtime: a label the drone must have (repeat; default: the workflow's)")
    parser.add_argument("--follow", "-f", action="store_true", help="tail the events until the execution ends")
    parser.add_argument("--url", help="control plane URL (env SWARM_URL)")
    parser.add_argument("--token", help="API token (env SWARM_TOKEN)")
    parser.set_defaults(handler=handle_run)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, content = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"swarmctl run: {option} takes NAME=VALUE, got {value!r}")
        pairs[name] = content
    return pairs


def _workflow_id(client, tenant: str, workflow: str) -> int:
    for item in get_all(client, f"/tenants/{tenant}/workflows"):
        if item["slug"] == workflow:
            return item["id"]
    raise SystemExit(f"swarmctl run: no workflow {tenant}/{workflow}")


def print_event(event: dict) -> None:
    """Output lines go to their stream; stage events to stderr as `[type] message`."""
    if event["type"] == "output":
        stream = sys.stderr if event.get("stream") == "stderr" else sys.stdout
        print(event["message"], file=stream, flush=True)
    else:
        print(f"[{event['type']}] {event['message']}", file=sys.stderr, flush=True)


def follow(client, execution_id: int) -> int:
    """Print events until the execution ends; return its exit code."""
    after = 0
    while True:
        response = client.get(f"/executions/{execution_id}/events", params={"after": after})
        raise_for_api_error(response)
        page = response.json()
        for event in page["events"]:
            print_event(event)
        after = page["next_after"]
        if page["finished"] and not page["events"]:
            if page["exit_code"] is not None:
                return page["exit_code"]
            return EXIT_CODES.get(page["status"], 1)
        if not page["events"]:
            time.sleep(POLL_SECONDS)


def handle_run(args) -> int:
    """Spawn, then either print the execution's URL or follow it to the end."""
    tenant, sep, workflow = args.target.partition("/")
    if not sep or not tenant or not workflow:
        raise SystemExit("swarmctl run: the target is TENANT/WORKFLOW")
    env = _pairs(args.env, "--env")
    inputs = _pairs(args.input, "--input")
    with api_client(ApiConfig.from_env(args.url, args.token)) as client:
        workflow_id = _workflow_id(client, tenant, workflow)
        body = {"env": env, "inputs": inputs, **({"runtime": args.runtime} if args.runtime else {}),
                **({"labels": args.labels} if args.labels is not None else {})}
        response = client.post(f"/workflows/{workflow_id}/executions", json=body)
        raise_for_api_error(response)
        execution = response.json()
        print(f"execution {execution['id']} of {tenant}/{workflow} {execution['version']} on the "
              f"{execution['runtime']} runtime: {execution['url']}",
              file=sys.stderr, flush=True)
        if not args.follow:
            print(execution["id"])
            return 0
        return follow(client, execution["id"])
