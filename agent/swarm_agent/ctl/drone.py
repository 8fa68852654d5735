"""`swarmctl drone`: the fleet from a terminal.

    swarmctl drone list [--status S] [--json]
    swarmctl drone ping NAME            # waits for the pong; exit 1 when none comes
    swarmctl drone pause|resume|drain|reset-escalation NAME
    swarmctl drone escalation [NAME] [--limit N]

Reading takes a read, engine or admin token; changing a drone an admin token.
"""
from __future__ import annotations

import argparse
import json

from swarm_agent.cli_common import api_command_group
from swarm_agent.client import ApiConfig, api_client, get_all, raise_for_api_error

OPERATOR_ACTIONS = ("pause", "resume", "drain", "reset-escalation")


def register(subparsers) -> None:
    """Add `drone` and its subcommands."""
    commands = api_command_group(subparsers, "drone", "list, ping, pause, resume and drain drones")

    listing = commands.add_parser("list", help="every drone: status, ladder level, WebSocket, last heartbeat")
    listing.add_argument("--status", help="only drones with this status (online, stale, offline, paused, draining)")
    listing.add_argument("--json", action="store_true", help="print the server's JSON")
    listing.set_defaults(handler=list_command)

    ping = commands.add_parser("ping", help="ping a drone over its WebSocket and wait for the pong")
    ping.add_argument("name")
    ping.add_argument("--json", action="store_true", help="print the server's JSON")
    ping.set_defaults(handler=ping_command)

    for action in OPERATOR_ACTIONS:
        command = commands.add_parser(action, help=f"{action.replace('-', ' ')} a drone (admin token)")
        command.add_argument("name")
        command.set_defaults(handler=operator_command, action=action)

    escalation = commands.add_parser("escalation", help="the latest ladder steps, newest first")
    escalation.add_argument("name", nargs="?", help="only this drone's")
    escalation.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    escalation.set_defaults(handler=escalation_command)


def _client(args):
    return api_client(ApiConfig.from_env(args.url, args.token))


def list_command(args: argparse.Namespace) -> int:
    """Print the fleet, one drone a line."""
    with _client(args) as client:
        drones = get_all(client, "/drones")
    if args.status:
        drones = [drone for drone in drones if drone["status"] == args.status]
    if args.json:
        print(json.dumps(drones, indent=2, sort_keys=True))
        return 0
    if not drones:
        print("no drones" + (f" with status {args.status}" if args.status else ""))
    for drone in drones:
        websocket = "ws up" if drone["ws_connected"] else "ws down"
        labels = ",".join(drone.get("labels") or []) or "-"
        print(f"{drone['name']}\t{drone['status']}\tL{drone['escalation_level']}\t{drone['drone_type']}\t"
              f"{websocket}\tlast heartbeat {drone['last_heartbeat_at'] or 'never'}\tlabels {labels}")
    return 0


def ping_command(args: argparse.Namespace) -> int:
    """Ping one drone; 0 when it answered."""
    with _client(args) as client:
        response = client.post(f"/drones/{args.name}/ping")
        raise_for_api_error(response)
        answer = response.json()
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    elif answer["ok"]:
        print(f"{answer['name']}: pong in {answer['latency_ms']} ms")
    else:
        print(f"{answer['name']}: no pong ({answer['detail']}; WebSocket {'up' if answer['ws_connected'] else 'down'})")
    return 0 if answer["ok"] else 1


def operator_command(args: argparse.Namespace) -> int:
    """Pause, resume, drain or reset a drone's ladder."""
    with _client(args) as client:
        response = client.post(f"/drones/{args.name}/{args.action}")
        raise_for_api_error(response)
        drone = response.json()
    print(f"{drone['name']}: {drone['status']}, L{drone['escalation_level']}")
    return 0


def escalation_command(args: argparse.Namespace) -> int:
    """Print the latest ladder steps (of one drone, or of all)."""
    params = {"limit": max(args.limit, 1)}
    if args.name:
        params["drone"] = args.name
    with _client(args) as client:
        response = client.get("/escalation", params=params)
        raise_for_api_error(response)
        steps = response.json()["results"]
    if not steps:
        print("no escalation steps")
    for step in steps:
        print(f"{step['at']}\t{step['drone']}\tL{step['level']} {step['action']}\t{step['result']}\t{step['detail']}")
    return 0
