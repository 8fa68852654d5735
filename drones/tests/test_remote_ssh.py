"""L1/L2 over SSH when the WebSocket is down: a real SSH server (asyncssh) with host-key checking."""
import asyncio
import threading

import asyncssh
import pytest

from drones.ladder import drone_evaluate
from drones.models import Drone, EscalationEvent
from drones.tests.conftest import register_drone
from swarm.embedded import free_port

pytestmark = pytest.mark.django_db(transaction=True)


class SshServer:
    """An SSH server on 127.0.0.1 that accepts one client key and records the commands it is asked to run."""

    def __init__(self, tmp_path):
        self.commands: list[str] = []
        self.port = free_port()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_path = tmp_path / "id_ed25519"
        client_key.write_private_key(str(self.client_key_path))
        self.client_key_path.chmod(0o600)
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def handle(process):
            self.commands.append(process.command)
            process.stdout.write("restarted\n")
            process.exit(0)

        async def start():
            self.server = await asyncssh.create_server(
                asyncssh.SSHServer, "127.0.0.1", self.port, server_host_keys=[self.host_key],
                authorized_client_keys=authorized, process_factory=handle)
            started.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop)
        started.wait(10)

    def known_hosts_line(self, key=None) -> str:
        key = key or self.host_key
        return f"[127.0.0.1]:{self.port} {key.export_public_key().decode().strip()}\n"

    def stop(self):
        async def close():
            self.server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def ssh_server(tmp_path):
    server = SshServer(tmp_path)
    yield server
    server.stop()


def _dead_drone(name, ssh_server, known_hosts):
    drone, _ = register_drone(name, drone_type="lxc")
    Drone.objects.filter(pk=drone.pk).update(
        last_heartbeat_at=None, registered_at=drone.registered_at.replace(year=2020), ws_connected=False,
        ssh_host="127.0.0.1", ssh_port=ssh_server.port, ssh_user="swarm", ssh_key_path=str(ssh_server.client_key_path),
        ssh_known_hosts=known_hosts)
    return drone


def test_l1_and_l2_go_over_ssh_when_the_websocket_is_down(ssh_server, short_ladder):
    short_ladder.SWARM_ESCALATION_COOLDOWNS = {1: 0.0, 2: 0.0, 3: 60.0, 4: 60.0}
    drone = _dead_drone("ssh-1", ssh_server, ssh_server.known_hosts_line())
    assert drone_evaluate(drone_id=drone.pk).outcome == "acted"
    assert drone_evaluate(drone_id=drone.pk).outcome == "acted"
    steps = list(EscalationEvent.objects.filter(drone=drone).order_by("id"))
    assert [(step.level, step.result) for step in steps] == [(1, "ok"), (2, "ok")], [s.detail for s in steps]
    assert ssh_server.commands == [Drone._meta.get_field("ssh_restart_command").default,
                                   Drone._meta.get_field("ssh_hard_restart_command").default]


def test_unknown_host_key_is_never_accepted(ssh_server, short_ladder):
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    drone = _dead_drone("ssh-2", ssh_server, ssh_server.known_hosts_line(impostor))
    drone_evaluate(drone_id=drone.pk)
    step = EscalationEvent.objects.get(drone=drone)
    assert step.result == "failed"
    assert "known_hosts" in step.detail or "Host key" in step.detail, step.detail
    assert ssh_server.commands == []
