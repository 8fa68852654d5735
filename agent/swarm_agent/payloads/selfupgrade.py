"""The agent upgrading itself: payload type `swarm-agent` (DESIGN.md § Payloads).

1. Stage the new release beside the running one (`releases/<sha256>/`, a
   `swarm_agent` package tree) through the same installer as any payload.
2. Probe it before switching: a subprocess runs `swarm_agent.payloads.probe`
   *from the release* — it must import, parse this agent's command line and
   reach the control plane with the drone token. A failed probe leaves
   everything as it was and the deploy is reported `failed` with the reason.
3. Switch `current`, write `upgrade.json` (`pending`), and restart into it
   through the launcher (swarm_agent/payloads/launcher.py): the first time by
   exec'ing a copy of the launcher in place of this process, afterwards by
   exiting 75 to the launcher that already supervises this agent.
4. The new agent confirms (writes `confirmed`) once it has reported
   `succeeded` to the control plane; if it crashes first or never gets
   there, the launcher switches back and the previous agent reports
   `failed` with the reason. A drone never ends up without a running agent.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import swarm_agent
from swarm_agent.payloads.install import ApplyResult, DeployFailed, PayloadInstaller, Report
from swarm_agent.payloads.launcher import RESTART_INTO_NEW_RELEASE, read_upgrade, write_upgrade

logger = logging.getLogger(__name__)

AGENT_TYPE = "swarm-agent"


def running_release_sha256(directory: Path) -> str:
    """The release of `directory` this process's agent code was imported from ("" for the installed agent)."""
    where = Path(swarm_agent.__file__).resolve()
    releases = (directory / "releases").resolve()
    if releases in where.parents:
        return where.relative_to(releases).parts[0]
    return ""


def probe_release(release: Path, *, agent_argv: list[str], timeout: float) -> str:
    """'' when the agent in `release` imports, parses our config and reaches the server; else why not."""
    env = dict(os.environ, PYTHONPATH=str(release), SWARM_AGENT_PROBE_RELEASE=str(release),
               SWARM_AGENT_ARGV=json.dumps(agent_argv))
    try:
        completed = subprocess.run([sys.executable, "-m", "swarm_agent.payloads.probe"], cwd=release, env=env,
                                   capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the probe did not finish within {timeout:g} s"
    if completed.returncode == 0:
        return ""
    lines = (completed.stdout.strip().splitlines() or []) + (completed.stderr.strip().splitlines() or [])
    return f"probe exited {completed.returncode}: " + " | ".join(lines[-3:])[:400]


def stage_agent_upgrade(installer: PayloadInstaller, command: dict, report: Report, *,
                        agent_argv: list[str]) -> ApplyResult:
    """Steps 1–3 up to the restart: stage, probe, switch, record `pending`. The caller restarts the agent."""
    directory = installer.type_dir(command["payload_type"], command.get("install_root") or "")
    previous = installer.current_sha256(directory)
    timeout = float((command.get("health") or {}).get("timeout") or 60)
    if (command.get("sha256") or "") == running_release_sha256(directory) and (command.get("sha256") or previous):
        return ApplyResult(True, "this agent already runs that release", command.get("sha256") or "")
    if command.get("action") == "revert" and not command.get("sha256"):
        sha256, release = "", None
    else:
        try:
            directory, sha256 = installer.stage(command, report)
        except DeployFailed as failure:
            return ApplyResult(False, str(failure), previous)
        release = directory / "releases" / sha256
        report("verifying", "probing the new agent before switching")
        failure = probe_release(release, agent_argv=agent_argv, timeout=timeout)
        if failure:
            return ApplyResult(False, f"the new agent failed its probe, not switched: {failure}", previous)
    shutil.copyfile(Path(__file__).with_name("launcher.py"), directory / "launcher.py")
    write_upgrade(directory, {"status": "pending", "target_id": command.get("target_id"),
                              "action": command.get("action") or "deploy", "new_sha256": sha256,
                              "previous_sha256": previous, "confirm_seconds": max(timeout, 20.0),
                              "started_at": time.time()})
    installer.switch(directory, sha256)
    installer.prune(directory, keep=int(command.get("keep_releases") or 3), protect={sha256, previous})
    return ApplyResult(True, "probe passed; restarting into the new agent", sha256, restart_agent=True)


def restart_into_upgrade(daemon, directory: Path) -> None:
    """Restart the agent on the code `current` now points at, through the launcher."""
    if os.environ.get("SWARM_AGENT_LAUNCHER_PID"):
        daemon._exit_code = RESTART_INTO_NEW_RELEASE  # the launcher above us starts the new release
        daemon.stop()
        return
    os.environ.setdefault("SWARM_AGENT_BASE_PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, str(directory / "launcher.py"), "--agent-dir", str(directory), "--", *sys.argv[1:]]

    def exec_launcher() -> None:
        logger.warning("restarting into the new agent release through %s", directory / "launcher.py")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)

    # The daemon re-execs itself after a graceful stop (plugins stopped, builds handed back); point that
    # re-exec at the launcher instead of the agent (no change to daemon.py's restart path).
    daemon._reexec = exec_launcher
    daemon._restart_mode = "graceful"
    daemon.stop()


def pending_confirmation(directory: Path) -> dict | None:
    """The upgrade this (new) agent must confirm, or the failure it must report; None when there is nothing."""
    upgrade = read_upgrade(directory)
    status = upgrade.get("status")
    if status == "pending" and running_release_sha256(directory) == (upgrade.get("new_sha256") or ""):
        return upgrade
    if status == "failed":
        return upgrade
    return None


def mark_upgrade(directory: Path, upgrade: dict, status: str) -> None:
    write_upgrade(directory, dict(upgrade, status=status, updated_at=time.time()))
