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

    def __init__(self, tmp_path, process_factory=None):
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
                authorized_client_keys=authorized, process_factory=process_factory or handle)
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


def test_a_websocket_left_up_by_a_killed_server_worker_falls_back_to_ssh_once_pings_go_unanswered(
        ssh_server, short_ladder):
    """The flag says connected (the worker holding the WebSocket died without closing it); pings go nowhere."""
    from drones.ladder import fleet_evaluate
    from drones.services import drone_pong_record, drones_ping_due

    short_ladder.SWARM_ESCALATION_COOLDOWNS = {1: 0.0, 2: 0.0, 3: 60.0, 4: 60.0}
    short_ladder.SWARM_DRONE_PING_INTERVAL = 0.0
    drone = _dead_drone("ssh-ghost", ssh_server, ssh_server.known_hosts_line())
    Drone.objects.filter(pk=drone.pk).update(ws_connected=True, missed_pongs=0)

    fleet_evaluate()
    (first,) = EscalationEvent.objects.filter(drone=drone)
    assert (first.level, first.result) == (1, "ok"), "no pong ever came back: SSH, not the WebSocket"
    assert ssh_server.commands == [Drone._meta.get_field("ssh_restart_command").default]

    for _ in range(short_ladder.SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS + 1):
        fleet_evaluate()
    drone.refresh_from_db()
    assert not drone.ws_connected, "unanswered pings cleared the flag the dead worker left up"

    # A pong proves the WebSocket is there again.
    Drone.objects.filter(pk=drone.pk).update(last_ping_at=None)
    (ping_drone,) = drones_ping_due()
    from drones.redis_client import key, redis_client

    ping_ids = [k.decode().rsplit(":", 1)[1] for k in redis_client().scan_iter(key("ping", "*"))]
    answered = [ping_id for ping_id in ping_ids if drone_pong_record(drone_id=drone.pk, ping_id=ping_id) is not None]
    assert ping_drone == drone.pk and answered
    drone.refresh_from_db()
    assert drone.ws_connected and drone.missed_pongs == 0


def test_a_websocket_that_answers_pings_carries_the_restart_even_with_ssh_configured(ssh_server, short_ladder):
    from django.utils import timezone

    drone = _dead_drone("ssh-ws", ssh_server, ssh_server.known_hosts_line())
    Drone.objects.filter(pk=drone.pk).update(ws_connected=True, last_pong_at=timezone.now())
    assert drone_evaluate(drone_id=drone.pk).outcome == "acted"
    step = EscalationEvent.objects.get(drone=drone)
    assert (step.level, step.result) == (1, "sent") and "WebSocket" in step.detail
    assert ssh_server.commands == []
