"""`swarmctl`: the operator and engine CLI (reads SWARM_URL and SWARM_TOKEN)."""
from __future__ import annotations

import sys

from swarm_agent import ctl
from swarm_agent.cli_common import build_parser, run_cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of `swarmctl`."""
    parser = build_parser("swarmctl", "Drive a Swarm control plane (SWARM_URL, SWARM_TOKEN).", ctl)
    return run_cli(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
