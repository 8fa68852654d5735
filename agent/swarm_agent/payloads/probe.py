"""`python -m swarm_agent.payloads.probe`: can this agent release run here? Run *from the release* before switching.

It must import (the whole agent, from the release directory and nowhere
else), parse the running agent's configuration (its command line, handed
over in SWARM_AGENT_ARGV), and reach the control plane with the drone's
token. Prints one JSON line; exit 0 only when all three hold.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    release = Path(os.environ["SWARM_AGENT_PROBE_RELEASE"]).resolve()
    checks: dict = {}
    import importlib

    import swarm_agent

    where = Path(swarm_agent.__file__).resolve()
    if release not in where.parents:
        print(json.dumps({"ok": False, "reason": f"swarm_agent imported from {where}, not from {release}"}))
        return 1
    for module in ("swarm_agent.cli_agent", "swarm_agent.daemon", "swarm_agent.commands.run",
                   "swarm_agent.plugins", "swarm_agent.plugins.payloads"):
        importlib.import_module(module)
    checks["import"] = str(where.parent)
    argv = json.loads(os.environ.get("SWARM_AGENT_ARGV") or "[]")
    from swarm_agent import commands
    from swarm_agent.cli_common import build_parser

    args = build_parser("swarm-agent", "probe", commands).parse_args(argv)
    checks["config"] = {"server": args.server, "name": args.name}
    state = json.loads((Path(args.state_dir) / "agent.json").read_text())
    import httpx

    response = httpx.get(f"{args.server.rstrip('/')}/api/v1/payloads/agent/pending",
                         headers={"Authorization": f"Bearer {state['token']}"}, timeout=15.0)
    if response.status_code != 200:
        print(json.dumps({"ok": False, "reason": f"the control plane answered {response.status_code}"}))
        return 1
    checks["control_plane"] = response.status_code
    print(json.dumps({"ok": True, "version": getattr(swarm_agent, "__version__", "?"), **checks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
