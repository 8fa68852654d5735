"""Relay sockets fit in a Unix socket path however deep the drone's work directory is."""
from __future__ import annotations

from swarm_agent.relay import UnixSocketRelay
from swarm_agent.sandbox import MAX_SOCKET_PATH, relay_directory


def test_a_shallow_root_keeps_its_relays_inside(tmp_path):
    root = tmp_path / "e1"
    root.mkdir()
    assert relay_directory(root) == root / "net" and (root / "net").is_dir()


def test_a_deep_root_gets_a_short_private_directory_that_a_relay_can_bind(tmp_path):
    root = tmp_path / ("deep-" * 20) / "executions" / "42"
    root.mkdir(parents=True)
    assert len(str(root / "net" / "0.sock")) > 108  # bind() would fail with "AF_UNIX path too long" here
    directory = relay_directory(root)
    try:
        assert directory.parent != root and len(str(directory / "999.sock")) <= MAX_SOCKET_PATH
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
        relay = UnixSocketRelay(directory / "0.sock", ("127.0.0.1", 9))  # binds: the path fits
        relay.close()
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
