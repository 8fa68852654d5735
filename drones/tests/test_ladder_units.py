"""Ladder rules without processes: cooldown doubling, climbing, the beat entry."""
import pytest
from django.conf import settings

from drones.ladder import cooldown_seconds, next_level
from drones.models import Drone


def test_beat_runs_the_health_check_with_an_expiry():
    entry = settings.CELERY_BEAT_SCHEDULE["drones.check_health"]
    assert entry["task"] == "drones.check_health"
    assert entry["options"]["expires"] > 0


def test_cooldown_doubles_per_attempt_up_to_the_cap(settings):
    settings.SWARM_ESCALATION_COOLDOWNS = {1: 30.0, 2: 30.0, 3: 120.0, 4: 900.0}
    settings.SWARM_ESCALATION_COOLDOWN_CAP = 200.0
    assert [cooldown_seconds(level=1, attempts=n) for n in (1, 2, 3, 4)] == [30.0, 60.0, 120.0, 200.0]
    assert cooldown_seconds(level=3, attempts=1) == 120.0
    assert cooldown_seconds(level=3, attempts=2) == 200.0


@pytest.mark.parametrize(("drone_type", "level", "attempts", "per_level", "expected"), [
    ("lxc", 0, 0, 1, 1),
    ("lxc", 1, 1, 1, 2),
    ("lxc", 2, 1, 1, 3),
    ("qemu", 2, 1, 1, 3),
    ("bare-metal", 2, 1, 1, 4),
    ("unknown", 2, 1, 1, 4),
    ("lxc", 3, 1, 1, 4),
    ("lxc", 4, 3, 1, 4),
    ("lxc", 1, 1, 2, 1),  # two attempts per level: repeat L1 once more
    ("lxc", 1, 2, 2, 2),
])
def test_next_level(settings, drone_type, level, attempts, per_level, expected):
    settings.SWARM_ESCALATION_ATTEMPTS_PER_LEVEL = per_level
    drone = Drone(name="unit", drone_type=drone_type, escalation_level=level, escalation_attempts=attempts)
    assert next_level(drone) == expected


@pytest.mark.django_db
def test_a_hypervisor_token_no_key_decrypts_fails_the_reboot_naming_it():
    from cryptography.fernet import Fernet

    from drones.choices import EscalationLevel, EscalationResult
    from drones.ladder import perform
    from drones.models import Hypervisor
    from drones.tests.conftest import register_drone

    hypervisor = Hypervisor.objects.create(name="pve", url="https://pve.example.com:8006", token_id="swarm@pve!l3")
    lost_key = Fernet(Fernet.generate_key())
    Hypervisor.objects.filter(pk=hypervisor.pk).update(token_secret_encrypted=lost_key.encrypt(b"x").decode())
    drone, _ = register_drone("lxc-1")
    Drone.objects.filter(pk=drone.pk).update(drone_type="lxc", hypervisor=hypervisor, hypervisor_node="pve1",
                                             hypervisor_vmid=101)
    result, detail = perform(Drone.objects.get(pk=drone.pk), EscalationLevel.REBOOT_CONTAINER, "unhealthy")
    assert result == EscalationResult.FAILED
    assert f"drones.Hypervisor {hypervisor.pk} token_secret_encrypted" in detail and "SWARM_SECRETS_KEYS" in detail
