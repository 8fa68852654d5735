"""The SSH transport of terminals: a real SSH server (asyncssh), the drone's pinned host key, nothing else."""
from __future__ import annotations

import asyncssh
import pytest

from drones.models import Drone, TerminalSession
from drones.terminal.ssh import drone_host_keys_pin, pinned_fingerprints
from drones.tests.conftest import register_drone, wait_until
from drones.tests.test_remote_ssh import SshServer
from drones.tests.test_terminal_live import Terminal, session_cookie, staff_user

pytestmark = pytest.mark.live


async def fake_shell(process):
    """A tiny interactive shell on the PTY: echoes what is typed, answers each line, `exit` ends it."""
    process.stdout.write("fake-shell$ ")
    line = ""
    while True:
        data = await process.stdin.read(1024)
        if not data:
            return
        for character in data:
            if character in "\r\n":
                process.stdout.write("\r\n")
                if line == "exit":
                    process.exit(0)
                    return
                process.stdout.write(f"you said {line} on a {process.get_terminal_type()}\r\nfake-shell$ ")
                line = ""
            else:
                line += character
                process.stdout.write(character)


@pytest.fixture
def shell_server(tmp_path):
    server = SshServer(tmp_path, process_factory=fake_shell)
    yield server
    server.stop()


def _ssh_drone(name, server, known_hosts):
    drone, _ = register_drone(name)
    Drone.objects.filter(pk=drone.pk).update(ssh_host="127.0.0.1", ssh_port=server.port, ssh_user="swarm",
                                             ssh_key_path=str(server.client_key_path), ssh_known_hosts=known_hosts)
    return drone


def test_ssh_terminal_with_the_pinned_host_key(live_url, shell_server):
    _ssh_drone("ssh-term-1", shell_server, shell_server.known_hosts_line())
    terminal = Terminal(live_url, "ssh-term-1", cookie=session_cookie(staff_user("sshop")), transport="ssh")
    assert terminal.message("opened")["transport"] == "ssh"
    terminal.type("hello\r")
    terminal.read_until(lambda: b"you said hello on a xterm-256color" in terminal.output, what="the shell's answer")
    terminal.type("exit\r")
    assert terminal.message("exit")["exit_status"] == 0
    session = wait_until(lambda: TerminalSession.objects.filter(state="closed").first(), message="the closed row")
    assert session.transport == "ssh" and session.recording_sha256 and session.end_reason == "exit"


def test_a_changed_host_key_is_refused_naming_its_fingerprint(live_url, shell_server):
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    _ssh_drone("ssh-term-2", shell_server, shell_server.known_hosts_line(impostor))
    terminal = Terminal(live_url, "ssh-term-2", cookie=session_cookie(staff_user("careful")), transport="ssh")
    refusal = terminal.message("error")["detail"]
    presented = shell_server.host_key.get_fingerprint("sha256")
    assert presented in refusal and impostor.get_fingerprint("sha256") in refusal, refusal
    assert "never accepted automatically" in refusal
    ended = terminal.message("exit")
    assert not any(message["type"] == "opened" for message in terminal.messages)
    assert ended["reason"].startswith("refused: the SSH host key")
    session = TerminalSession.objects.get(drone_name="ssh-term-2")
    assert session.state == "closed" and session.bytes_in == 0


def test_ssh_without_a_pinned_key_is_never_tried(live_url, shell_server):
    _ssh_drone("ssh-term-3", shell_server, "")
    terminal = Terminal(live_url, "ssh-term-3", cookie=session_cookie(staff_user("hopeful")), transport="ssh")
    assert "pinned host key" in terminal.message("error")["detail"]
    assert TerminalSession.objects.get(drone_name="ssh-term-3").state == "refused"
    assert shell_server.commands == []


def test_keys_the_agent_reports_are_pinned_once_and_never_replace_a_pin(db):
    first = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    second = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    drone, _ = register_drone("keys-1")
    assert drone_host_keys_pin(drone_id=drone.pk, keys=[first, "not a key"]) is True
    assert drone_host_keys_pin(drone_id=drone.pk, keys=[second]) is False
    drone.refresh_from_db()
    assert drone.ssh_known_hosts == f"* {first}\n"
    assert pinned_fingerprints(drone.ssh_known_hosts) == [asyncssh.import_public_key(first).get_fingerprint("sha256")]
