"""`python -m swarm_agent.boot`: the boot script without the rest of the CLI (fast start, stdlib + filelock)."""
import argparse
import sys

from swarm_agent.commands.boot import register


def main(argv: list[str] | None = None) -> int:
    """Parse the boot options and run the boot."""
    parser = argparse.ArgumentParser(prog="swarm-agent boot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["boot", *(sys.argv[1:] if argv is None else argv)])
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
