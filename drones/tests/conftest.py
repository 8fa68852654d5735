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


@pytest.fixture(autouse=True)
def drone_intervals_like_live_server(settings):
    """The in-process settings match the live server's test environment (see the root conftest)."""
    settings.SWARM_DRONE_HEARTBEAT_INTERVAL = 1.0
    settings.SWARM_DRONE_PING_INTERVAL = 1.0
    settings.SWARM_DRONE_PONG_TIMEOUT = 2.0


@pytest.fixture
def fake_proxmox():
    from drones.tests.fakes import FakeProxmox

    server = FakeProxmox()
    yield server
    server.stop()


@pytest.fixture
def fake_webhook():
    from drones.tests.fakes import FakeWebhookReceiver

    server = FakeWebhookReceiver()
    yield server
    server.stop()


@pytest.fixture
def fake_smtp():
    from drones.tests.fakes import FakeSmtpServer

    server = FakeSmtpServer()
    yield server
    server.stop()


@pytest.fixture
def short_ladder(settings, fake_smtp, fake_webhook):
    """Ladder settings with second-long cooldowns, mail to the fake SMTP server and the fake webhook."""
    settings.SWARM_DRONE_STALE_AFTER_MISSED = 2
    settings.SWARM_DRONE_OFFLINE_AFTER_MISSED = 6
    settings.SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS = 3
    settings.SWARM_ESCALATION_COOLDOWNS = {1: 1.0, 2: 1.0, 3: 2.0, 4: 60.0}
    settings.SWARM_ESCALATION_COOLDOWN_CAP = 120.0
    settings.SWARM_ESCALATION_ATTEMPTS_PER_LEVEL = 1
    settings.SWARM_ESCALATION_RESET_AFTER = 2.0
    settings.SWARM_ESCALATION_ALERT_EMAILS = ["ops@example.test"]
    settings.SWARM_ESCALATION_WEBHOOK_URL = f"{fake_webhook.url}/hooks/swarm"
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = fake_smtp.port
    settings.EMAIL_USE_TLS = False
    return settings


def run_ladder_until(predicate, *, timeout: float = 40.0, interval: float = 0.25, message: str = "the ladder"):
    """Run the beat task's body repeatedly (as beat would) until `predicate()` holds."""
    from drones.ladder import fleet_evaluate

    def tick():
        fleet_evaluate()
        return predicate()

    return wait_until(tick, timeout=timeout, interval=interval, message=message)
