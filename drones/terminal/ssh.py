"""The second terminal transport: direct SSH (asyncssh) to the drone, only ever with a pinned host key.

The host key is pinned on the drone (`ssh_known_hosts`, known_hosts format):
set by an operator, or captured when the agent first reports its host keys
over its authenticated WebSocket (`drone_host_keys_pin`; an existing pin is
never replaced that way). An unknown or changed key is refused with a
sentence that names the fingerprint the host presented and the pinned ones —
nothing is ever trusted on first use, and nothing is typed into a host that
failed the check.
"""
from __future__ import annotations

import asyncio
import logging

import asyncssh

from drones.models import Drone

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
READ_CHUNK = 16 * 1024


class TerminalRefused(Exception):
    """The transport could not open the terminal; the message says why, for the operator."""


def drone_host_keys_pin(*, drone_id: int, keys: list[str]) -> bool:
    """Pin the host keys the agent reported, when the drone has none pinned yet; True when it pinned them."""
    lines = [f"* {key.strip()}" for key in keys if key.strip().startswith(("ssh-", "ecdsa-"))][:10]
    if not lines:
        return False
    pinned = Drone.objects.filter(pk=drone_id, ssh_known_hosts="").update(ssh_known_hosts="\n".join(lines) + "\n")
    if pinned:
        logger.info("drone %s: pinned %d SSH host key(s) reported by its agent", drone_id, len(lines))
    return bool(pinned)


def pinned_fingerprints(known_hosts: str) -> list[str]:
    """SHA256 fingerprints of the keys in a known_hosts text."""
    fingerprints = []
    for line in known_hosts.splitlines():
        fields = line.split()
        if len(fields) < 3 or line.lstrip().startswith("#"):
            continue
        try:
            fingerprints.append(asyncssh.import_public_key(f"{fields[1]} {fields[2]}").get_fingerprint("sha256"))
        except (asyncssh.KeyImportError, ValueError):
            continue
    return fingerprints


async def host_key_refusal(drone: Drone) -> str:
    """The sentence for a host whose key is not the pinned one, naming both fingerprints."""
    try:
        presented = await asyncio.wait_for(asyncssh.get_server_host_key(drone.ssh_host, drone.ssh_port),
                                           CONNECT_TIMEOUT)
        shown = presented.get_fingerprint("sha256") if presented is not None else "no key"
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as error:
        shown = f"unknown ({error})"
    pinned = ", ".join(pinned_fingerprints(drone.ssh_known_hosts)) or "none"
    return (f"refused: the SSH host key of {drone.ssh_host}:{drone.ssh_port} is {shown}, not the pinned key "
            f"({pinned}). If the host was really reinstalled, pin its new key on the drone's page "
            f"(SSH → known hosts); it is never accepted automatically.")


class SshTerminal:
    """A PTY over SSH; `on_output(bytes)` and `on_exit(exit_status, reason)` are the consumer's callbacks."""

    def __init__(self, drone: Drone, *, on_output, on_exit):
        self.drone = drone
        self.on_output = on_output
        self.on_exit = on_exit
        self.connection = None
        self.process = None
        self.reader: asyncio.Task | None = None

    async def open(self, cols: int, rows: int) -> dict:
        drone = self.drone
        options = {"host": drone.ssh_host, "port": drone.ssh_port, "username": drone.ssh_user or None,
                   "known_hosts": asyncssh.import_known_hosts(drone.ssh_known_hosts),
                   "connect_timeout": CONNECT_TIMEOUT}
        if drone.ssh_key_path:
            options["client_keys"] = [drone.ssh_key_path]
        try:
            self.connection = await asyncssh.connect(**options)
        except asyncssh.HostKeyNotVerifiable:
            raise TerminalRefused(await host_key_refusal(drone)) from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as error:
            raise TerminalRefused(f"SSH to {drone.ssh_host}:{drone.ssh_port} failed: {error}") from None
        self.process = await self.connection.create_process(term_type="xterm-256color", term_size=(cols, rows),
                                                            encoding=None)
        self.reader = asyncio.ensure_future(self._read())
        return {"transport": "ssh", "host": drone.ssh_host}

    async def _read(self) -> None:
        try:
            while True:
                data = await self.process.stdout.read(READ_CHUNK)
                if not data:
                    break
                await self.on_output(data)
            await self.process.wait()
            status = self.process.exit_status
            await self.on_exit(status if status is not None and status >= 0 else None, "exit")
        except (asyncssh.Error, OSError) as error:
            await self.on_exit(None, f"SSH connection lost: {error}")

    async def write(self, data: bytes) -> None:
        self.process.stdin.write(data)
        await self.process.stdin.drain()  # the flow control of a paste: SSH's own window

    async def resize(self, cols: int, rows: int) -> None:
        self.process.change_terminal_size(cols, rows)

    async def close(self, reason: str) -> None:
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()
        if self.connection is not None:
            self.connection.close()
