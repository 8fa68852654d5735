"""The per-execution supervisor: a detached process that owns one execution's sandbox or microVM.

`python -m swarm_agent.supervisor --spec FILE` double-forks into a session of
its own and prints `{"pid", "start_time"}` of the daemon, which the runtime
stores in `execution.runtime_state`. From then on the execution belongs to
this process, not to the Celery worker that started it: workers, beat and
web servers may all restart meanwhile. It

* holds what the boot needs on the host: the unix-socket relays of a
  `process` sandbox, or (`microvm`) the VM's overlay disk, its fw_cfg orders,
  the host bundle cache warmed before the VM starts (one download per hash
  across concurrent supervisors: the cache's per-hash lock), and QEMU;
* keeps the console (microVM) or the boot's output (process) in a log file,
  timestamping the guest's `swarm-guest:` stage lines;
* stops everything on SIGTERM (cancel / timeout from the control plane: the
  runtime signals this pid, checked against its start time) or at its own
  deadline (a backstop should the control plane be gone);
* when the sandbox or VM has exited, reports `runtime_exited` — exit status,
  reason, console tail, timeline — to the control plane with its own runtime
  token, retrying until the control plane answers. If the boot died without
  reporting its end (QEMU killed, the guest panicked), that report fails the
  execution with the reason (`vm_exited`, `boot_exited`).

Standard library only: a drone hosting executions runs the same file.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from swarm_agent.boot.http import HttpFailure, request_json

KILL_GRACE_SECONDS = 3.0
REPORT_GIVE_UP_SECONDS = 3600.0
CONSOLE_TAIL_BYTES = 8192
RUNTIME_TOKEN_HEADER = "X-Swarm-Runtime-Token"
STATE_FILE = "supervisor-state.json"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against pid reuse), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[19] if fields[0] != "Z" else None


def is_running(pid: int | None, start_time: str | None) -> bool:
    """Whether `pid` still runs and is the process that started at `start_time`."""
    if not pid:
        return False
    started = process_start_time(pid)
    return started is not None and (not start_time or started == start_time)


def kill_process_group(pgid: int, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after `grace` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Supervisor:
    """Runs one execution's child (bwrap boot or QEMU) to its end and reports how it ended."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.root = Path(spec["root"])
        self.stop_requested = threading.Event()
        self.stop_reason = ""
        self.child: subprocess.Popen | None = None
        self.timeline: dict[str, float] = {}
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.console_path = Path(spec["log"])
        self.details: dict = {}
        self.runtime_token = self._read_secret(spec.get("runtime_token_file"))

    @staticmethod
    def _read_secret(path: str | None) -> str:
        if not path:
            return ""
        try:
            text = Path(path).read_text().strip()
        except OSError:
            return ""
        Path(path).unlink(missing_ok=True)
        return text

    def _mark(self, stage: str) -> None:
        self.timeline.setdefault(stage, round(time.monotonic() - self.started, 3))

    def _save_state(self) -> None:
        """What a control plane needs if this supervisor dies: the child's pid and start time."""
        state = {"supervisor_pid": os.getpid(), "child_pid": self.child.pid if self.child else None,
                 "child_start_time": process_start_time(self.child.pid) if self.child else None}
        part = self.root / f".{STATE_FILE}.part"
        part.write_text(json.dumps(state))
        os.replace(part, self.root / STATE_FILE)

    def request_stop(self, reason: str) -> None:
        """Stop the child (from a signal handler or the deadline)."""
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    # --- the run -----------------------------------------------------------------

    def run(self) -> int:
        deadline = self.started + float(self.spec.get("deadline_seconds") or 24 * 3600)
        cleanup = []
        try:
            if self.spec["kind"] == "microvm":
                from swarm_agent.supervisor_vm import start_vm

                self.child, cleanup = start_vm(self)
            else:
                self.child, cleanup = self._start_process()
        except Exception as exc:  # noqa: BLE001 - whatever went wrong is reported, nothing runs
            self.report({"code": "runtime_start_failed", "reason": f"the runtime could not start: {exc}",
                         "returncode": None})
            return 1
        self._save_state()
        while self.child.poll() is None:
            if time.monotonic() >= deadline:
                self.request_stop("deadline")
            if self.stop_requested.wait(0.2):
                kill_process_group(self.child.pid)
                break
        returncode = self.child.wait()
        self._mark("exited")
        for undo in reversed(cleanup):
            try:
                undo()
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass
        self.report(self._outcome(returncode))
        return 0

    def _start_process(self):
        """The process runtime's sandbox: relays for its network, then the bwrap'd boot."""
        from swarm_agent.relay import start_relays

        relays = []
        network = self.spec.get("relays")
        if network:
            relays = start_relays(Path(network["directory"]), [tuple(e) for e in network["endpoints"]])
        with open(self.console_path, "ab") as log:
            try:
                child = subprocess.Popen(
                    self.spec["argv"], env=self.spec["env"], cwd=self.spec.get("cwd"), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError:
                for relay in relays:
                    relay.close()
                raise
        self._mark("started")
        workdir = self.spec.get("workdir")

        def close_relays():
            for relay in relays:
                relay.close()
            if network and network.get("remove"):  # a short directory outside the root (swarm_agent.sandbox)
                import shutil

                shutil.rmtree(network["directory"], ignore_errors=True)

        def remove_workdir():
            if workdir:
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)

        return child, [remove_workdir, close_relays]

    def _outcome(self, returncode: int) -> dict:
        """How the child ended, as the `runtime_exited` report says it."""
        kind = self.spec["kind"]
        what = "the VM (QEMU)" if kind == "microvm" else "the boot process"
        code = "vm_exited" if kind == "microvm" else "boot_exited"
        if self.stop_requested.is_set():
            reason = {"deadline": f"{what} ran past the supervisor's deadline and was killed",
                      "signal": f"{what} was stopped by the control plane (cancel or timeout)"}.get(
                self.stop_reason, f"{what} was stopped")
            code = "stopped" if self.stop_reason != "deadline" else "deadline"
        elif returncode < 0:
            reason = f"{what} was killed by {_signal_name(-returncode)}"
        else:
            reason = f"{what} exited with code {returncode}"
        return {"code": code, "reason": reason, "returncode": returncode, **self.details}

    # --- reporting ---------------------------------------------------------------

    def console_tail(self) -> str:
        try:
            with open(self.console_path, "rb") as console:
                console.seek(0, os.SEEK_END)
                size = console.tell()
                console.seek(max(0, size - CONSOLE_TAIL_BYTES))
                return console.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def report(self, outcome: dict) -> None:
        """POST `runtime_exited` until the control plane answers (it may be restarting)."""
        body = {"type": "runtime_exited", "data": {
            **outcome, "kind": self.spec["kind"], "timeline": self.timeline, "started_at": self.started_wall,
            "console_log": str(self.console_path), "console_tail": self.console_tail(),
        }}
        url = self.spec.get("report_url")
        if not url:
            print(json.dumps(body), flush=True)
            return
        give_up = time.monotonic() + REPORT_GIVE_UP_SECONDS
        delay = 0.2
        while True:
            try:
                status, text = request_json("POST", url, headers={RUNTIME_TOKEN_HEADER: self.runtime_token},
                                            payload=body, timeout=30)
            except HttpFailure as exc:
                status, text = None, str(exc)
            if status is not None and status < 500:
                if status >= 400:
                    print(f"runtime report refused: {status} {text[:300]}", flush=True)
                return
            if time.monotonic() > give_up:
                print(f"gave up reporting the runtime's exit: {text[:300]}", flush=True)
                return
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _daemonize(log_path: Path) -> None:
    """Double fork into a new session; the original process prints the daemon's pid and exits."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            message = pipe.read()
        sys.stdout.write(message)
        sys.stdout.flush()
        os._exit(0 if message else 1)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(null)
    os.close(descriptor)
    pid = os.getpid()
    os.write(write_end, json.dumps({"pid": pid, "start_time": process_start_time(pid)}).encode())
    os.close(write_end)


def main(argv: list[str] | None = None) -> int:
    """Read the spec, detach, supervise the execution to its end."""
    parser = argparse.ArgumentParser(prog="python -m swarm_agent.supervisor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="JSON file written by the runtime (deleted once read)")
    parser.add_argument("--foreground", action="store_true", help="do not detach (tests, debugging)")
    args = parser.parse_args(argv)
    spec_path = Path(args.spec)
    spec = json.loads(spec_path.read_text())
    spec_path.unlink(missing_ok=True)
    if not args.foreground:
        _daemonize(Path(spec["root"]) / "supervisor.log")
    supervisor = Supervisor(spec)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.request_stop("signal"))
    signal.signal(signal.SIGINT, lambda *_: supervisor.request_stop("signal"))
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
