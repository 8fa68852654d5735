"""L1/L2 over SSH when the agent's WebSocket is down (asyncssh; host keys checked, never auto-accepted)."""
from __future__ import annotations

import asyncio

import asyncssh
from django.conf import settings


class RemoteCommandError(Exception):
    """SSH failed: unknown host key, refused login, timeout, or the command failed."""


async def _run(drone, command: str, timeout: float) -> str:
    known_hosts = asyncssh.import_known_hosts(drone.ssh_known_hosts)
    options = {"host": drone.ssh_host, "port": drone.ssh_port, "username": drone.ssh_user or None,
               "known_hosts": known_hosts}
    if drone.ssh_key_path:
        options["client_keys"] = [drone.ssh_key_path]
    async with asyncssh.connect(**options) as connection:
        result = await connection.run(command, check=False)
    if result.exit_status != 0:
        raise RemoteCommandError(f"exit {result.exit_status}: {str(result.stderr or result.stdout)[:300]}")
    return str(result.stdout or "")[:300]


def ssh_run(*, drone, command: str, timeout: float | None = None) -> str:
    """Run `command` on the drone over SSH; returns its output (trimmed) or raises RemoteCommandError."""
    if not drone.ssh_configured:
        raise RemoteCommandError("SSH is not configured for this drone (host and known_hosts are required)")
    timeout = timeout or settings.SWARM_ESCALATION_SSH_TIMEOUT
    try:
        return asyncio.run(asyncio.wait_for(_run(drone, command, timeout), timeout))
    except RemoteCommandError:
        raise
    except asyncssh.HostKeyNotVerifiable as error:
        raise RemoteCommandError(f"host key of {drone.ssh_host} is not in known_hosts: {error}") from error
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as error:
        raise RemoteCommandError(f"{type(error).__name__}: {error}") from error
