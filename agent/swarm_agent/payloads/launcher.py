"""The agent's launcher: keeps an agent running across self-upgrades (standard library only).

`swarm_agent.payloads.selfupgrade` copies this file to `<agent dir>/launcher.py`
and execs it (`python launcher.py --agent-dir DIR -- run ...`) the first time
the agent upgrades itself; from then on it stays the process that systemd or
the shell started, and the agent runs as its child on the code that
`<agent dir>/current` points at (PYTHONPATH). Being a copy, it never
depends on the agent release it supervises.

* A child exiting with 75 asks for a restart into a newly switched release.
* While `upgrade.json` says `pending`, the new agent must write `confirmed`
  (after reaching the control plane) within the confirm window. If it exits
  first (fails to import, crashes on start) or the window passes, the
  launcher puts `current` back on the previous release, records why in
  `upgrade.json` (`failed`, with the last lines the agent printed), and
  starts the previous agent, which reports the failure.
* Any other exit of the child ends the launcher with the same code; SIGTERM,
  SIGINT, SIGUSR1 and SIGUSR2 are passed on to the child.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

RESTART_INTO_NEW_RELEASE = 75
UPGRADE_FILE = "upgrade.json"


def read_upgrade(directory: Path) -> dict:
    try:
        return json.loads((directory / UPGRADE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_upgrade(directory: Path, state: dict) -> None:
    temporary = directory / f".{UPGRADE_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(state))
    os.replace(temporary, directory / UPGRADE_FILE)


def switch(directory: Path, sha256: str) -> None:
    current = directory / "current"
    if not sha256:
        current.unlink(missing_ok=True)
        return
    temporary = directory / f".current.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(f"releases/{sha256}", temporary)
    os.replace(temporary, current)


class Child:
    """The agent process, its stderr copied through while the last lines are kept for a failure report."""

    def __init__(self, directory: Path, agent_args: list[str]):
        env = dict(os.environ, SWARM_AGENT_LAUNCHER_PID=str(os.getpid()))
        base = os.environ.get("SWARM_AGENT_BASE_PYTHONPATH", "")
        current = directory / "current"
        paths = [str(current.resolve())] if current.is_symlink() and current.exists() else []
        env["PYTHONPATH"] = os.pathsep.join(paths + ([base] if base else []))
        self.tail: collections.deque[str] = collections.deque(maxlen=15)
        self.process = subprocess.Popen([sys.executable, "-m", "swarm_agent.cli_agent", *agent_args], env=env,
                                        stderr=subprocess.PIPE)
        self._copier = threading.Thread(target=self._copy, daemon=True)
        self._copier.start()

    def _copy(self) -> None:
        for line in iter(self.process.stderr.readline, b""):
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()
            self.tail.append(line.decode(errors="replace").rstrip())

    def wait(self) -> int:
        code = self.process.wait()
        self._copier.join(timeout=2)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swarm-agent-launcher")
    parser.add_argument("--agent-dir", required=True)
    parser.add_argument("agent_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    directory = Path(args.agent_dir)
    agent_args = [arg for arg in args.agent_args if arg != "--"] if args.agent_args[:1] == ["--"] else args.agent_args
    child: Child | None = None

    def forward(signum, frame):  # noqa: ARG001
        if child is not None and child.process.poll() is None:
            child.process.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    while True:
        upgrade = read_upgrade(directory)
        child = Child(directory, agent_args)
        if upgrade.get("status") == "pending":
            failure = _await_confirmation(directory, child, float(upgrade.get("confirm_seconds") or 60))
            if failure:
                previous = upgrade.get("previous_sha256") or ""
                switch(directory, previous)
                upgrade.update(status="failed", reason=failure, failed_at=time.time())
                write_upgrade(directory, upgrade)
                print(f"swarm-agent-launcher: {failure}; back on {previous[:12] or 'the installed agent'}",
                      file=sys.stderr, flush=True)
                continue
        code = child.wait()
        if code == RESTART_INTO_NEW_RELEASE:
            continue
        return code


def _await_confirmation(directory: Path, child: Child, seconds: float) -> str:
    """'' once the new agent confirmed; else why not (and the child is gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if read_upgrade(directory).get("status") == "confirmed":
            return ""
        code = child.process.poll()
        if code is not None:
            child.wait()
            tail = " | ".join(list(child.tail)[-4:])
            return f"the new agent exited with code {code} before confirming" + (f": {tail}" if tail else "")
        time.sleep(0.2)
    child.process.kill()
    child.wait()
    return f"the new agent did not confirm within {seconds:g} s (could not reach the control plane?)"


if __name__ == "__main__":
    sys.exit(main())
