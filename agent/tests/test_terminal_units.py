"""The agent's terminal and system-log pieces that need no server: sizes, frames, the session's processes."""
import os
import subprocess
import time
import uuid

from swarm_agent.syslog import tail_argv
from swarm_agent.terminal import INPUT_FRAME, clamp_size, frame, parse_frame, session_processes, signal_session


def test_sizes_are_clamped_whatever_is_asked():
    assert clamp_size(0, 0) == (2, 1)
    assert clamp_size(-5, 10**9) == (2, 200)
    assert clamp_size("wide", None) == (80, 24)
    assert clamp_size(132, 43) == (132, 43)


def test_frames_carry_the_session_id_and_the_bytes():
    session = uuid.uuid4().hex
    raw = frame(INPUT_FRAME, session, b"ls -la\r")
    assert len(raw) == 1 + 16 + 7
    assert parse_frame(raw) == (INPUT_FRAME, session, b"ls -la\r")
    assert parse_frame(b"\x01short") is None


def test_a_sessions_processes_are_found_and_killed_background_jobs_too():
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 61"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(session_processes(shell.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(session_processes(shell.pid)) == 3  # sh and its two sleeps
        signal_session(shell.pid, 9)
        shell.wait(5)
        deadline = time.monotonic() + 5
        while session_processes(shell.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session_processes(shell.pid) == []
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, 9)


def test_the_log_tail_follows_configured_files_first(tmp_path):
    path = tmp_path / "app.log"
    assert tail_argv([str(path)]) == ["tail", "-n", "200", "-F", str(path)]
