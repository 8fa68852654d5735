"""`swarm-agent run`: the drone daemon (register, heartbeat, WebSocket, commands, plugins)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from pathlib import Path

from swarm_agent.host_facts import DRONE_TYPES


def register(subparsers) -> None:
    """Add the `run` subcommand."""
    parser = subparsers.add_parser(
        "run", help="run the drone daemon",
        description="Register with the control plane (or reuse the saved token), heartbeat, keep the WebSocket "
                    "open, answer pings and carry out commands. Every option also reads an environment variable.")
    env = os.environ.get
    parser.add_argument("--server", default=env("SWARM_URL", "http://127.0.0.1:8000"),
                        help="control plane base URL (SWARM_URL)")
    parser.add_argument("--join-token", default=env("SWARM_JOIN_TOKEN"),
                        help="join token for the first registration (SWARM_JOIN_TOKEN)")
    parser.add_argument("--state-dir", default=env("SWARM_AGENT_STATE_DIR", "/var/lib/swarm-agent"),
                        help="where the drone token is kept (SWARM_AGENT_STATE_DIR)")
    parser.add_argument("--work-dir", default=env("SWARM_AGENT_WORK_DIR"),
                        help="build/work directory (default <state-dir>/work)")
    parser.add_argument("--name", default=env("SWARM_DRONE_NAME", socket.gethostname()),
                        help="drone name (SWARM_DRONE_NAME, default the hostname)")
    parser.add_argument("--labels", default=env("SWARM_AGENT_LABELS", ""),
                        help="comma-separated labels (SWARM_AGENT_LABELS)")
    parser.add_argument("--capacity", type=int, default=int(env("SWARM_AGENT_CAPACITY", "1")),
                        help="concurrent builds (SWARM_AGENT_CAPACITY)")
    parser.add_argument("--drone-type", choices=DRONE_TYPES, default=env("SWARM_DRONE_TYPE") or None,
                        help="skip detection and report this type")
    parser.add_argument("--restart-command", default=env("SWARM_AGENT_RESTART_COMMAND"),
                        help="shell command for restart_service (default: re-exec the agent)")
    parser.add_argument("--hard-restart-command", default=env("SWARM_AGENT_HARD_RESTART_COMMAND"),
                        help="shell command for hard_restart (default: re-exec at once)")
    parser.add_argument("--no-websocket", action="store_true", help="HTTP heartbeats only (diagnostics)")
    parser.add_argument("--disable-plugin", action="append", default=[], help="do not load this plugin module")
    parser.add_argument("--no-terminal", action="store_true", default=env("SWARM_AGENT_TERMINAL", "1") == "0",
                        help="refuse terminal sessions from the control plane (SWARM_AGENT_TERMINAL=0)")
    parser.add_argument("--terminal-shell", default=env("SWARM_AGENT_TERMINAL_SHELL"),
                        help="shell of terminal sessions (default: the account's login shell)")
    parser.add_argument("--terminal-user", default=env("SWARM_AGENT_TERMINAL_USER"),
                        help="account terminal shells run as when the agent runs as root (default: the agent's)")
    parser.add_argument("--terminal-max-sessions", type=int,
                        default=int(env("SWARM_AGENT_TERMINAL_MAX_SESSIONS", "8")),
                        help="concurrent terminal sessions this agent accepts")
    parser.add_argument("--syslog-file", action="append",
                        default=[path for path in env("SWARM_AGENT_SYSLOG_FILES", "").split(",") if path],
                        help="a log file the admin's system log viewer tails (repeatable; "
                             "SWARM_AGENT_SYSLOG_FILES, comma separated); default: the systemd journal")
    parser.add_argument("--log-level", default=env("SWARM_AGENT_LOG_LEVEL", "INFO"))
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the daemon until it is stopped."""
    from swarm_agent.daemon import AgentConfig, AgentDaemon

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # One INFO line per HTTP request (a claim poll every few seconds) is noise; DEBUG shows them.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    config = AgentConfig(
        server=args.server, state_dir=Path(args.state_dir), name=args.name, join_token=args.join_token,
        labels=[label.strip() for label in args.labels.split(",") if label.strip()], capacity=args.capacity,
        work_dir=Path(args.work_dir) if args.work_dir else None, drone_type=args.drone_type,
        restart_command=args.restart_command, hard_restart_command=args.hard_restart_command,
        websocket=not args.no_websocket, disabled_plugins=set(args.disable_plugin),
        terminal=not args.no_terminal, terminal_shell=args.terminal_shell, terminal_user=args.terminal_user,
        terminal_max_sessions=args.terminal_max_sessions, syslog_files=list(args.syslog_file),
    )
    return asyncio.run(AgentDaemon(config).run())
