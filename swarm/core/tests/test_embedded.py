"""Embedded services: the shared start sequence, and Redis as the cheapest real server.

PostgreSQL is started by `make test` itself when DATABASE_URL is unset, and
SeaweedFS by the session's `s3_server` fixture; these tests cover what the
suite would not notice: the data directory lock, persistence across a
restart, a failed start's message and clean-up, and the port-conflict retry.
"""
import os
import signal
import subprocess
import sys

import pytest
import redis as redis_client

from swarm.embedded import (
    EmbeddedService,
    EmbeddedServiceError,
    ServiceAlreadyRunningError,
    free_port,
    start_redis,
    wait_for_port,
)
from swarm.embedded.service import PORT_CONFLICT_ATTEMPTS, Launch, ServiceStart

def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_redis_keeps_its_data_across_a_restart_and_locks_its_directory(tmp_path):
    with start_redis(tmp_path / "redis") as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        redis_client.Redis.from_url(server.url).set("swarm-test", b"kept")
        with pytest.raises(ServiceAlreadyRunningError):
            start_redis(tmp_path / "redis")
    assert group_is_gone(server.pid)

    with start_redis(tmp_path / "redis") as again:  # the lock went with the server
        assert redis_client.Redis.from_url(again.url).get("swarm-test") == b"kept"
    assert sorted(path.name for path in (tmp_path / "redis").iterdir()) == ["dump.rdb", "redis.lock", "redis.log"]


def python_launch(script: str, port: int) -> Launch[int]:
    """A stand-in server: `python -c script`, ready once it listens on `port`."""
    return Launch(
        argv=[sys.executable, "-c", script, str(port)],
        ports=port,
        wait_ready=lambda process: wait_for_port("127.0.0.1", port, 10, process=process),
    )


LISTEN = "import socket, sys, time; s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); time.sleep(60)"
BIND_FAILS = "print('bind: Address already in use'); raise SystemExit(1)"


def test_a_failed_start_says_why_and_releases_everything(tmp_path):
    with pytest.raises(EmbeddedServiceError) as failure:
        with ServiceStart(name="fake", title="Fake", data_dir=tmp_path, log_path=tmp_path / "fake.log",
                          stop_signal=signal.SIGTERM) as start:
            start.launch(lambda: python_launch("print('no config file'); raise SystemExit(3)", free_port()))
    message = str(failure.value)
    assert message.startswith("Fake failed to start: process ")
    assert "exited with code 3" in message and "no config file" in message

    with ServiceStart(name="fake", title="Fake", data_dir=tmp_path, log_path=tmp_path / "fake.log",
                      stop_signal=signal.SIGTERM):
        pass  # the lock was released


def test_a_port_taken_meanwhile_is_retried_on_new_ports(tmp_path):
    scripts = iter([BIND_FAILS, LISTEN])
    with ServiceStart(name="fake", title="Fake", data_dir=tmp_path, log_path=tmp_path / "fake.log",
                      stop_signal=signal.SIGTERM) as start:
        port = start.launch(lambda: python_launch(next(scripts), free_port()))
        server = start.handle(EmbeddedService, url=f"tcp://127.0.0.1:{port}", stop_timeout=5.0)
    assert server.is_running()
    with pytest.raises(ServiceAlreadyRunningError):
        with ServiceStart(name="fake", title="Fake", data_dir=tmp_path, log_path=tmp_path / "fake.log",
                          stop_signal=signal.SIGTERM):
            pass
    server.stop()
    assert group_is_gone(server.pid)


def test_ports_that_keep_being_taken_give_up(tmp_path):
    launches = []

    def next_launch() -> Launch[int]:
        launches.append(free_port())
        return python_launch(BIND_FAILS, launches[-1])

    with pytest.raises(EmbeddedServiceError, match="ports kept being taken"):
        with ServiceStart(name="fake", title="Fake", data_dir=tmp_path, log_path=tmp_path / "fake.log",
                          stop_signal=signal.SIGTERM) as start:
            start.launch(next_launch)
    assert len(launches) == PORT_CONFLICT_ATTEMPTS


def test_the_launcher_prepares_the_environment_before_any_settings_load():
    check = "import sys, swarm.launcher; sys.exit('swarm.settings' in sys.modules or 'django.db' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
