"""Build an argparse CLI from the `register(subparsers)` functions of a package's modules."""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from types import ModuleType

import httpx

from swarm_agent.client import ApiError, connection_failure


def build_parser(prog: str, description: str, package: ModuleType) -> argparse.ArgumentParser:
    """A parser with one subcommand group per module of `package` (sorted by name)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def api_command_group(subparsers, name: str, help_text: str):
    """A swarmctl command group taking `--url` and `--token`; returns its subcommands."""
    parser = subparsers.add_parser(name, help=help_text)
    parser.add_argument("--url", help="control plane URL (default: $SWARM_URL)")
    parser.add_argument("--token", help="API token (default: $SWARM_TOKEN)")
    return parser.add_subparsers(dest=f"{name}_command", required=True)


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse and dispatch to the chosen subcommand's `handler`; API errors become exit code 1."""
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ApiError as error:
        field = f" (field: {error.field})" if error.field else ""
        print(f"error: {error.error}: {error.detail}{field}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(f"error: connection_failed: {connection_failure(error, getattr(args, 'url', None))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
