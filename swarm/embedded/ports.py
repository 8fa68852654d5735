"""TCP ports on 127.0.0.1: pick free ones, tell whether one is free, wait for a listener.

Every embedded server binds to 127.0.0.1 only, on ports chosen free at
start-up, so that several instances (parallel test runs in different
worktrees) can coexist on one machine.  A port chosen free may be taken by
someone else before the server binds it; starts retry on fresh ports then
(see :mod:`swarm.embedded.service`).
"""

from __future__ import annotations

import socket
import subprocess
import time

from swarm.embedded.process import wait_until

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on ``host`` that nothing is listening on right now.

    The port is only guaranteed free at the moment of the call; start
    functions retry with new ports if a server then fails to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """Return True if ``port`` can currently be bound on ``host``."""
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the servers themselves: lingering TIME_WAIT connections of a
        # previous run must not make its ports look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def accepts_connections(host: str, port: int) -> bool:
    """Return True if a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    process: subprocess.Popen | None = None,
) -> None:
    """Block until a TCP connection to ``host:port`` succeeds.

    Raises :class:`TimeoutError` after ``timeout`` seconds, or
    :class:`~swarm.embedded.errors.EmbeddedServiceError` as soon as
    ``process`` (if given) exits.
    """
    wait_until(
        lambda: accepts_connections(host, port),
        deadline=time.monotonic() + timeout,
        timeout_message=f"{host}:{port} did not accept connections within {timeout:g}s",
        process=process,
        exit_message=f"process {{pid}} exited with code {{code}} before {host}:{port} accepted connections",
    )
