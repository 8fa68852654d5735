"""A scaled-out Swarm for tests: two uvicorn replicas, two Celery workers and one beat, as real processes.

They share the test database, Redis (REDIS_URL, the tests' database number)
and the session's SeaweedFS, like three machines share managed services in
production (docs/operations.md "Running on three machines"). In front of the
replicas sits `RoundRobinProxy`, a tiny TCP balancer standing in for the
operator's load balancer: each new connection goes to the next replica that
accepts it, so when a replica dies its agents' reconnects land on the other
one. The agent knows one server URL on purpose — the balancer's — and a test
that needs an agent on one replica gives it that replica's URL directly.

Use the `scaleout` fixture (module scope); every process is killed at its end.
"""
from __future__ import annotations

import itertools
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Short timings so a fault shows within seconds (the processes read them at start).
SCALEOUT_SETTINGS = {
    "SWARM_BUILD_LEASE_SECONDS": "6",
    "SWARM_BUILD_UPDATE_INTERVAL": "1",
    "SWARM_BUILD_CANCEL_GRACE": "2",
    "SWARM_BUILD_ACK_TIMEOUT": "15",
    "SWARM_DRONE_HEARTBEAT_INTERVAL": "1",
    # A killed worker's task goes to the other worker after 4 s instead of an hour.
    "SWARM_CELERY_VISIBILITY_TIMEOUT": "4",
    "SWARM_CELERY_RESTORE_INTERVAL": "1",
    "SWARM_EXECUTION_REAP_INTERVAL": "1",
    # Longer than the suite's 2 s: a beat stalled on the loaded test machine must not lose its lease.
    "SWARM_BEAT_LEASE_SECONDS": "3",
}


class RoundRobinProxy:
    """A TCP proxy on 127.0.0.1 that hands each connection to the next backend accepting it."""

    def __init__(self, backends: list[tuple[str, int]]):
        from swarm.embedded import free_port

        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # WebSockets take turns apart from plain HTTP, so N agents' sockets alternate between the
        # replicas whatever their keep-alive HTTP connections did.
        self._turns = {False: itertools.count(), True: itertools.count()}
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        #: Open client connections per backend port, and the WebSockets among them.
        self.open_connections: dict[int, int] = {port: 0 for _, port in backends}
        self.open_websockets: dict[int, int] = {port: 0 for _, port in backends}
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=256)
        self._closed = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True, name="rr-proxy").start()

    def _connect_backend(self, websocket: bool) -> tuple[socket.socket, int] | None:
        start = next(self._turns[websocket])
        for offset in range(len(self.backends)):
            host, port = self.backends[(start + offset) % len(self.backends)]
            try:
                return socket.create_connection((host, port), timeout=2), port
            except OSError:
                continue  # that replica is down: the next one
        return None

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            first = client.recv(65536)  # clients speak first (HTTP): it says whether this is a WebSocket
        except OSError:
            first = b""
        websocket = first.startswith(b"GET /ws/")
        found = self._connect_backend(websocket) if first else None
        if found is None:
            client.close()
            return
        backend, port = found
        backend.settimeout(None)
        with self._lock:
            self._sockets.update((client, backend))
            self.open_connections[port] += 1
            self.open_websockets[port] += websocket
        try:
            backend.sendall(first)
        except OSError:
            pass
        pump = threading.Thread(target=self._pump, args=(backend, client), daemon=True)
        pump.start()
        self._pump(client, backend)
        pump.join()
        with self._lock:
            self.open_connections[port] -= 1
            self.open_websockets[port] -= websocket
            self._sockets.difference_update((client, backend))
        for end in (client, backend):
            end.close()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        # Either side gone: tear both down, as a balancer does when a backend dies.
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for end in list(self._sockets):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass
class ScaleOut:
    """The running processes: `replica_a`, `replica_b`, `workers`, `beat`, and the `proxy` before the replicas."""

    env: dict
    log_dir: Path
    replica_a: object
    replica_b: object
    proxy: RoundRobinProxy
    workers: list
    beat: object
    task_queue: str
    extra_processes: list = field(default_factory=list)

    def start_beat(self, name: str):
        """Another beat process (as if started by mistake); stopped with the environment."""
        from conftest import CeleryWorker

        beat = CeleryWorker(self.env, self.log_dir / f"{name}.log", beat=True)
        self.extra_processes.append(beat)
        return beat


def start_worker(env: dict, log_path: Path, *, name: str, queue: str):
    """A Celery worker serving the default queue and this environment's probe queue."""
    from conftest import CeleryWorker

    return CeleryWorker(dict(env, SCALEOUT_WORKER_NAME=name), log_path, extra_args=(
        "-n", f"{name}@%h", "-Q", f"celery,{queue}", "-I", "swarm.core.tests.scaleout_tasks"))


@pytest.fixture(scope="module")
def scaleout(subprocess_environment, tmp_path_factory):
    """Two replicas behind a round-robin proxy, two workers and one beat, for a module's tests."""
    from conftest import CeleryWorker, LiveServer

    log_dir = tmp_path_factory.mktemp("scaleout")
    env = dict(subprocess_environment, **SCALEOUT_SETTINGS)
    started: list = []
    proxy = None
    try:
        replica_a = LiveServer(env, log_dir / "replica-a.log")
        started.append(replica_a)
        replica_b = LiveServer(env, log_dir / "replica-b.log")
        started.append(replica_b)
        proxy = RoundRobinProxy([("127.0.0.1", replica_a.port), ("127.0.0.1", replica_b.port)])
        # Workers and beat build URLs for agents with the public URL: the balancer's.
        env = dict(env, SWARM_PUBLIC_URL=proxy.url)
        queue = f"scaleout-{uuid.uuid4().hex[:8]}"
        workers = []
        for name in ("worker-1", "worker-2"):
            workers.append(start_worker(env, log_dir / f"{name}.log", name=name, queue=queue))
            started.append(workers[-1])
        beat = CeleryWorker(env, log_dir / "beat.log", beat=True)
        started.append(beat)
        environment = ScaleOut(env=env, log_dir=log_dir, replica_a=replica_a, replica_b=replica_b, proxy=proxy,
                               workers=workers, beat=beat, task_queue=queue)
        yield environment
        started += environment.extra_processes
    finally:
        if proxy is not None:
            proxy.close()
        for process in reversed(started):
            process.stop()
