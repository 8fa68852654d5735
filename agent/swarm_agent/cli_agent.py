"""`swarm-agent`: the drone daemon (`run`) and the VM boot script (`boot`)."""
from __future__ import annotations

import sys

from swarm_agent import commands
from swarm_agent.cli_common import build_parser, run_cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of `swarm-agent`."""
    parser = build_parser("swarm-agent", "Swarm drone agent and VM boot script.", commands)
    return run_cli(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
