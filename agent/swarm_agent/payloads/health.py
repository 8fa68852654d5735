"""Payload health checks: a command run in the new release's directory, or an HTTP URL answering 2xx."""
from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path


class HealthCheckFailed(Exception):
    """The new release is not healthy; the message says why."""


def run_health_check(spec: dict, *, release_dir: Path, payload_type: str, sha256: str) -> str:
    """Run the check described by `spec` ({kind, command, url, timeout}); returns a short verdict."""
    kind = (spec or {}).get("kind") or "none"
    timeout = float((spec or {}).get("timeout") or 30.0)
    if kind == "none":
        return "no health check"
    if kind == "command":
        command = spec.get("command") or ""
        if not command:
            raise HealthCheckFailed("the health check command is empty")
        env = dict(os.environ, SWARM_PAYLOAD_DIR=str(release_dir), SWARM_PAYLOAD_TYPE=payload_type,
                   SWARM_PAYLOAD_SHA256=sha256)
        try:
            completed = subprocess.run(command, shell=True, cwd=release_dir, env=env, timeout=timeout,  # noqa: S602
                                       capture_output=True, text=True, errors="replace")
        except subprocess.TimeoutExpired:
            raise HealthCheckFailed(f"health check timed out after {timeout:g} s: {command}") from None
        if completed.returncode != 0:
            output = (completed.stderr or completed.stdout or "").strip()[-300:]
            raise HealthCheckFailed(f"health check exited {completed.returncode}: {command}"
                                    + (f": {output}" if output else ""))
        return f"health check passed: {command}"
    if kind == "http":
        url = spec.get("url") or ""
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - operator-configured
                if not 200 <= response.status < 300:
                    raise HealthCheckFailed(f"health URL {url} answered {response.status}")
        except (urllib.error.URLError, OSError) as error:
            raise HealthCheckFailed(f"health URL {url} failed: {error}") from None
        return f"health URL {url} answered 2xx"
    if kind == "agent_probe":
        return "agent probe (run before the switch)"
    raise HealthCheckFailed(f"unknown health check kind {kind!r}")
