"""Child process plumbing: spawn a server binary, wait on it, stop its whole group.

Every embedded server runs in its own session (so its process group is its
own and can be signalled as a whole), with its console output appended to a
log file, and with ``PR_SET_PDEATHSIG`` so that the kernel tells it to shut
down when the thread that started it dies.  Nothing here knows which server
it runs; :mod:`swarm.embedded.service` builds the start/stop lifecycle on
top of it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from swarm.embedded.errors import EmbeddedServiceError

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux / no libc symbol
    _prctl = None

#: How often readiness checks are repeated while a server starts.
POLL_INTERVAL = 0.05


def binary_in_package(package: str, relative_path: str, *, distribution: str) -> Path:
    """Path of the server binary ``relative_path`` shipped inside the importable ``package``.

    Raises :class:`EmbeddedServiceError` naming the ``distribution`` to
    install when the package is missing, or the path when the binary is.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(f"the {distribution} package is not installed")
    binary = Path(list(spec.submodule_search_locations)[0]) / relative_path
    if not binary.exists():
        raise EmbeddedServiceError(f"{binary.name} not found at {binary}")
    return binary


def parent_death_signal(death_signal: int):
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


def credentials_for(account: pwd.struct_passwd | None) -> dict:
    """``subprocess`` keyword arguments that run a child as ``account`` (none for ourselves)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def spawn(
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
            preexec_fn=parent_death_signal(death_signal),
            pass_fds=tuple(pass_fds),
            **credentials_for(run_as),
        )
    return process, offset


def child_env(drop_prefixes: Sequence[str] = ()) -> dict[str, str]:
    """Copy of our environment without variables that would confuse a server."""
    return {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}


def wait_until(
    ready: Callable[[], bool],
    *,
    deadline: float,
    timeout_message: str,
    process: subprocess.Popen | None = None,
    exit_message: str = "exited with code {code}",
    interval: float = POLL_INTERVAL,
) -> None:
    """Poll ``ready()`` until it returns True.

    Raises :class:`TimeoutError` (``timeout_message``) once
    ``time.monotonic()`` passes ``deadline``, or
    :class:`EmbeddedServiceError` (``exit_message`` formatted with the
    process's ``pid`` and exit ``code``) as soon as ``process`` (if given)
    has exited: a server that died will never become ready.
    """
    while not ready():
        if process is not None and process.poll() is not None:
            raise EmbeddedServiceError(exit_message.format(pid=process.pid, code=process.returncode))
        if time.monotonic() >= deadline:
            raise TimeoutError(timeout_message)
        time.sleep(interval)


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or None if there is no such process.

    The first is the one-letter state, the third the process group id.  The
    command name is skipped by its last ``)``: it may contain spaces and
    parentheses itself.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat_line[stat_line.rfind(")") + 2 :].split()


def _live_group_members(pgid: int) -> list[int]:
    """Pids of non-zombie processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = proc_stat_fields(int(entry))
        if fields and len(fields) >= 3 and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.append(int(entry))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_process_group(process: subprocess.Popen, stop_signal: int, timeout: float) -> None:
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
        time.sleep(POLL_INTERVAL)


def read_log_tail(log_path: Path, offset: int, max_lines: int = 40) -> str:
    """Last lines a server wrote to ``log_path`` since ``offset``."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])
