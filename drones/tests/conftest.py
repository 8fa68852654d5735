"""Fixtures for drone tests: join tokens, drone tokens, and real `swarm-agent run` processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

AGENT_TIMEOUT = 30.0


def wait_until(predicate, *, timeout: float = AGENT_TIMEOUT, interval: float = 0.1, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def join_token(db):
    """A fresh join token's plaintext."""
    from drones.services import join_token_issue

    _, plaintext = join_token_issue(name="test-join")
    return plaintext


def register_drone(name: str = "drone-1", **fields):
    """Register a drone through the service; returns (drone, drone token plaintext)."""
    from drones.services import drone_register, join_token_issue

    _, join = join_token_issue(name=f"join-{name}")
    registration = drone_register(join_token=join, name=name, **fields)
    return registration.drone, registration.token


@pytest.fixture
def drone_api(db):
    """An API client authenticated as a freshly registered drone (`client.drone`)."""
    drone, token = register_drone("drone-api")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    client.drone = drone
    client.token = token
    return client


class AgentProcess:
    """A real `swarm-agent run` subprocess."""

    def __init__(self, server: str, state_dir: Path, *, name: str, join_token: str | None, log_path: Path,
                 extra: list[str] | None = None, env: dict | None = None):
        self.name = name
        self.state_dir = state_dir
        self.log_path = log_path
        self.argv = [sys.executable, "-m", "swarm_agent.cli_agent", "run", "--server", server, "--state-dir",
                     str(state_dir), "--name", name, "--log-level", "DEBUG", *(extra or [])]
        if join_token:
            self.argv += ["--join-token", join_token]
        self.env = dict(os.environ, **(env or {}))
        self.process = None
        self.start()

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)
        log.close()

    def signal(self, signum) -> None:
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the agent dies without a word."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_agent(live_url, tmp_path):
    """Start real agents against the live server: `start_agent(name, join_token, extra=[...])`."""
    agents: list[AgentProcess] = []

    def start(name: str, join_token: str | None, *, extra: list[str] | None = None, env: dict | None = None,
              state_dir: Path | None = None) -> AgentProcess:
        directory = state_dir or tmp_path / f"agent-{name}"
        agent = AgentProcess(live_url, directory, name=name, join_token=join_token,
                             log_path=tmp_path / f"agent-{name}.log", extra=extra, env=env)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
