"""The one start/stop lifecycle every embedded server goes through.

PostgreSQL, Redis and SeaweedFS start the same way: lock the data
directory, spawn the binary on freshly chosen ports, wait until it is ready
(retrying on new ports when one was taken meanwhile), and hand back an
:class:`EmbeddedService` whose ``stop()`` signals the server and reaps its
whole process group.  :class:`ServiceStart` is that sequence, written once;
the service modules only say which binary, which ports and what "ready"
means.  Whatever fails on the way, everything started so far is stopped and
the lock released before the exception propagates.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Self, TypeVar

from swarm.embedded.errors import EmbeddedServiceError, PortConflict, ServiceAlreadyRunningError
from swarm.embedded.process import read_log_tail, spawn, terminate_process_group

#: How many times a start is retried when a freshly chosen port turned out to
#: be taken by the time the server tried to bind it.
PORT_CONFLICT_ATTEMPTS = 3

_PORT_CONFLICT_MARKERS = (
    "address already in use",
    "could not bind",
    "could not create any tcp/ip sockets",
    "port allocation failed",  # weed mini checks its ports before binding
)

#: How long a server that failed to start (or to finish starting) is given
#: to exit on its stop signal before its group is killed.
_FAILED_START_STOP_TIMEOUT = 15.0

PortsT = TypeVar("PortsT")
ServiceT = TypeVar("ServiceT", bound="EmbeddedService")


@dataclass(kw_only=True, eq=False)
class EmbeddedService:
    """Handle on a running embedded server process.

    ``url`` is the connection URL of the service, ``process`` the server
    process (leader of its own process group), ``log_path`` the file that
    receives its console output and ``startup_seconds`` how long the start
    took.  ``stop()`` is idempotent; the handle is a context manager that
    stops the service on exit.
    """

    name: str
    url: str
    process: subprocess.Popen = field(repr=False)
    log_path: Path
    startup_seconds: float = 0.0
    stop_signal: int = field(default=signal.SIGTERM, repr=False)
    stop_timeout: float = field(default=30.0, repr=False)
    lock_fd: int | None = field(default=None, repr=False)
    stopped: bool = field(default=False, init=False)
    owner_pid: int = field(default_factory=os.getpid, init=False, repr=False)

    @property
    def pid(self) -> int:
        """Process id of the server process (also its process group id)."""
        return self.process.pid

    def is_running(self) -> bool:
        """Return True while the server process has not exited."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Shut the server down gracefully, escalating to SIGKILL if needed.

        Sends ``stop_signal`` to the server, waits up to ``stop_timeout``
        seconds, then kills its whole process group and reaps it.  Safe to
        call several times and from :mod:`atexit`; does nothing in a forked
        child of the process that started the service.
        """
        if self.stopped or os.getpid() != self.owner_pid:
            return
        self.stopped = True
        atexit.unregister(self.stop)
        try:
            terminate_process_group(self.process, self.stop_signal, self.stop_timeout)
        finally:
            if self.lock_fd is not None:
                os.close(self.lock_fd)
                self.lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True, kw_only=True)
class Launch(Generic[PortsT]):
    """One try at starting a server: what to run, on which ports, and how to tell it is ready.

    ``wait_ready(process)`` returns once the server serves requests; it
    raises :class:`EmbeddedServiceError` or :class:`TimeoutError` when the
    server will not come up (see :func:`swarm.embedded.process.wait_until`).
    ``ports`` is whatever the caller needs back about the ports it chose.
    """

    argv: Sequence[str]
    ports: PortsT
    wait_ready: Callable[[subprocess.Popen], None]
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    run_as: pwd.struct_passwd | None = None


def prepared_dir(path: Path) -> Path:
    """``path`` made absolute (``~`` expanded, links resolved) and created if missing."""
    path = Path(path).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _acquire_data_dir_lock(lock_path: Path, description: str) -> int:
    """Take an exclusive ``flock`` on ``lock_path`` or raise ServiceAlreadyRunningError.

    The returned descriptor is handed to the server process too, so the lock
    lasts exactly as long as the server (or we) live.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise ServiceAlreadyRunningError(
            f"{description} is already running on {lock_path.parent} "
            f"(started by pid {holder}; lock {lock_path}). Stop the other instance "
            f"(e.g. another `make run`) or use a different data directory."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _looks_like_port_conflict(log_text: str) -> bool:
    lowered = log_text.lower()
    return any(marker in lowered for marker in _PORT_CONFLICT_MARKERS)


class ServiceStart:
    """Starting one embedded server, from locking its data directory to handing out its handle.

    Use it as a context manager around the whole start::

        with ServiceStart(name="redis", title="Redis", data_dir=d, log_path=log,
                          stop_signal=signal.SIGTERM) as start:
            ports = start.launch(next_launch)   # spawned, ready
            ...                                 # set-up that needs the running server
            return start.handle(EmbeddedRedis, url=..., stop_timeout=60.0, ...)

    Entering takes an exclusive lock on ``data_dir/<name>.lock`` (raising
    :class:`ServiceAlreadyRunningError` if another server holds it); the
    lock descriptor is inherited by the server, so it is held for as long as
    the server runs.  Leaving the block without a handle (an exception, an
    interrupt) stops the server if it was started and releases the lock.
    ``stop_signal`` is both how the server is asked to stop and the signal
    the kernel sends it when our thread dies.
    """

    def __init__(self, *, name: str, title: str, data_dir: Path, log_path: Path, stop_signal: int):
        self.name = name
        self.title = title
        self.lock_path = data_dir / f"{name}.lock"
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.started_at = time.monotonic()
        self.lock_fd: int | None = None
        self.process: subprocess.Popen | None = None
        self.service: EmbeddedService | None = None

    def __enter__(self) -> Self:
        self.lock_fd = _acquire_data_dir_lock(self.lock_path, self.title)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.service is not None:
            return  # the handle owns the process and the lock now
        if self.process is not None:
            terminate_process_group(self.process, self.stop_signal, _FAILED_START_STOP_TIMEOUT)
        os.close(self.lock_fd)

    def launch(self, next_launch: Callable[[], Launch[PortsT]]) -> PortsT:
        """Start the server from ``next_launch()`` and wait until it is ready; return its ports.

        ``next_launch`` is called again, for fresh ports, when the server
        exited because a port chosen as free had been taken meanwhile (up to
        :data:`PORT_CONFLICT_ATTEMPTS` tries).  Any other failure stops the
        server and raises :class:`EmbeddedServiceError` with the end of its
        log.
        """
        for attempt in range(1, PORT_CONFLICT_ATTEMPTS + 1):
            launch = next_launch()
            try:
                self.process = self._spawn_until_ready(launch)
                return launch.ports
            except PortConflict:
                if attempt == PORT_CONFLICT_ATTEMPTS:
                    raise EmbeddedServiceError(
                        f"{self.title}: ports kept being taken, gave up after {attempt} attempts"
                    ) from None

    def _spawn_until_ready(self, launch: Launch) -> subprocess.Popen:
        """Spawn ``launch`` and run its readiness wait; if that fails, stop it and say why."""
        process, log_offset = spawn(
            launch.argv, log_path=self.log_path, death_signal=self.stop_signal, cwd=launch.cwd,
            env=launch.env, run_as=launch.run_as, pass_fds=[self.lock_fd],
        )
        try:
            launch.wait_ready(process)
        except BaseException as exc:
            exited_by_itself = process.poll() is not None
            terminate_process_group(process, self.stop_signal, _FAILED_START_STOP_TIMEOUT)
            if isinstance(exc, (EmbeddedServiceError, TimeoutError)):
                raise self._startup_failure(exited_by_itself, log_offset, str(exc)) from None
            raise
        return process

    def _startup_failure(self, exited_by_itself: bool, log_offset: int, reason: str) -> EmbeddedServiceError:
        """The exception for a failed start, including the server's output.

        A server that exited on its own and logged a bind failure gets
        :class:`PortConflict`, which :meth:`launch` retries.
        """
        tail = read_log_tail(self.log_path, log_offset)
        if exited_by_itself and _looks_like_port_conflict(tail):
            return PortConflict(f"{self.title}: port already in use ({reason})")
        return EmbeddedServiceError(f"{self.title} failed to start: {reason}\n--- {self.log_path} ---\n{tail}")

    def handle(self, service_class: type[ServiceT], **fields) -> ServiceT:
        """The handle on the started server; from now on it owns the process and the lock.

        ``fields`` are the ones particular to ``service_class`` (``url``,
        ``stop_timeout``, ports...); the process, log, lock, stop signal and
        start-up time come from this start.  The handle's ``stop()`` is
        registered with :mod:`atexit`.
        """
        if self.process is None:
            raise EmbeddedServiceError(f"{self.title}: handle() before launch()")
        service = service_class(
            name=self.name,
            process=self.process,
            log_path=self.log_path,
            startup_seconds=time.monotonic() - self.started_at,
            stop_signal=self.stop_signal,
            lock_fd=self.lock_fd,
            **fields,
        )
        self.service = service
        atexit.register(service.stop)
        return service
