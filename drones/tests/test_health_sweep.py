"""The beat health check over the fleet (drones.ladder.fleet_evaluate): healthy drones cost nothing per drone."""
import asyncio
import json
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.utils import timezone

from drones.events import AGENT_MESSAGE_EVENT, drone_group
from drones.ladder import fleet_evaluate
from drones.models import Drone, EscalationEvent
from drones.redis_client import key, redis_client
from drones.tests.conftest import register_drone

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def default_intervals(settings):
    """The production intervals, so nothing goes stale while a test runs."""
    settings.SWARM_DRONE_HEARTBEAT_INTERVAL = 30.0
    settings.SWARM_DRONE_PING_INTERVAL = 10.0
    settings.SWARM_DRONE_STALE_AFTER_MISSED = 2
    settings.SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS = 3


def fleet(count: int, prefix: str, **fields) -> list[Drone]:
    drones = [register_drone(f"{prefix}-{n}")[0] for n in range(count)]
    Drone.objects.filter(pk__in=[drone.pk for drone in drones]).update(**fields)
    return drones


def test_a_sweep_pings_in_one_go_marks_the_healthy_and_steps_only_through_the_rest():
    now = timezone.now()
    long_ago = now - timedelta(minutes=10)
    steady = fleet(20, "steady", last_heartbeat_at=now, healthy_since=long_ago)
    joined = fleet(3, "joined", last_heartbeat_at=now, healthy_since=None)
    (silent,) = fleet(1, "silent", last_heartbeat_at=long_ago, healthy_since=long_ago)
    (climbing,) = fleet(1, "climbing", last_heartbeat_at=now, healthy_since=long_ago, escalation_level=1,
                        escalation_attempts=1, last_escalation_at=long_ago)
    (paused,) = fleet(1, "paused", last_heartbeat_at=long_ago, status="paused")

    evaluations = fleet_evaluate()

    assert sorted(evaluation.drone_id for evaluation in evaluations) == sorted([silent.pk, climbing.pk])
    outcomes = {evaluation.drone_id: evaluation.outcome for evaluation in evaluations}
    assert outcomes[silent.pk] == "acted" and outcomes[climbing.pk] == "reset"
    assert Drone.objects.get(pk=silent.pk).status == "offline"
    assert EscalationEvent.objects.filter(drone=silent, level=1).exists()
    assert all(Drone.objects.get(pk=drone.pk).healthy_since is not None for drone in joined)
    pinged = Drone.objects.filter(last_ping_at__isnull=False)
    assert set(pinged.values_list("pk", flat=True)) == {drone.pk for drone in [*steady, *joined, silent, climbing]}
    assert Drone.objects.get(pk=paused.pk).status == "paused" and Drone.objects.get(pk=paused.pk).last_ping_at is None

    (again,) = fleet_evaluate()
    assert (again.drone_id, again.outcome) == (silent.pk, "waiting"), "only the unhealthy drone is looked at again"


def test_an_unanswered_ping_counts_once_per_due_ping_and_escalates_at_the_threshold(settings):
    settings.SWARM_DRONE_PING_INTERVAL = 0.0  # a ping is due at every sweep
    (drone,) = fleet(1, "deaf", last_heartbeat_at=timezone.now(), healthy_since=timezone.now())

    assert fleet_evaluate() == []  # the first ping: nothing to miss yet
    assert fleet_evaluate() == []  # one missed
    assert fleet_evaluate() == []  # two missed
    assert Drone.objects.get(pk=drone.pk).missed_pongs == 2

    (evaluation,) = fleet_evaluate()  # three missed: the ladder
    assert (evaluation.drone_id, evaluation.outcome, evaluation.level) == (drone.pk, "acted", 1)
    assert "3 missed pongs" in EscalationEvent.objects.get(drone=drone).detail

    now = timezone.now()
    Drone.objects.filter(pk=drone.pk).update(last_pong_at=now + timedelta(seconds=1))
    fleet_evaluate()
    assert Drone.objects.get(pk=drone.pk).missed_pongs == 3, "an answered ping is not counted"


@pytest.mark.parametrize("ping", ["sweep", "ping_all"])
def test_pings_go_only_to_drones_with_an_agent_connected_and_can_be_answered(monkeypatch, ping):
    """The health sweep's pings and `POST /ping/all` (drone_ping_all) go out the same bulk way."""
    from drones.services import drone_ping_all

    connected, disconnected = fleet(2, "ws", last_heartbeat_at=timezone.now(), healthy_since=timezone.now())
    layer = get_channel_layer()
    sent_to = []
    group_send = layer.group_send

    async def recording_send(group, message):
        sent_to.append(group)
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", recording_send)
    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(layer.new_channel())
        loop.run_until_complete(layer.group_add(drone_group(connected.pk), channel))

        if ping == "sweep":
            fleet_evaluate()
        else:
            assert drone_ping_all() == sorted([connected.name, disconnected.name])

        message = loop.run_until_complete(asyncio.wait_for(layer.receive(channel), 5))
        loop.run_until_complete(layer.group_discard(drone_group(connected.pk), channel))
    finally:
        loop.close()
    assert message["type"] == AGENT_MESSAGE_EVENT and message["message"]["type"] == "ping"
    assert sent_to == [drone_group(connected.pk)], "no send to a drone whose agent is not connected"
    record = json.loads(redis_client().get(key("ping", message["message"]["id"])))
    assert record["drone_id"] == connected.pk

    from drones.services import drone_pong_record

    assert drone_pong_record(drone_id=connected.pk, ping_id=message["message"]["id"]) is not None
    assert Drone.objects.get(pk=connected.pk).last_pong_at is not None
    assert Drone.objects.get(pk=disconnected.pk).last_ping_at is not None


@pytest.mark.parametrize("broken", ["redis_client", "drones_send"])
def test_pings_that_cannot_go_out_are_not_recorded_so_an_outage_is_not_the_fleet_missing_pongs(
        settings, monkeypatch, broken):
    settings.SWARM_DRONE_PING_INTERVAL = 0.0
    drones = fleet(3, f"outage-{broken}", last_heartbeat_at=timezone.now(), healthy_since=timezone.now())
    fleet_evaluate()  # a first ping for each: from now on an unanswered one would count
    pinged_at = {drone.pk: Drone.objects.get(pk=drone.pk).last_ping_at for drone in drones}

    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(f"drones.services.presence.{broken}", down)
    for _ in range(5):
        assert fleet_evaluate() == []
    for drone in drones:
        row = Drone.objects.get(pk=drone.pk)
        assert row.missed_pongs == 0 and row.last_ping_at == pinged_at[drone.pk]


def test_the_last_sweep_shows_on_metrics_and_in_the_admin(admin_api, client, django_user_model):
    from drones.redis_client import key, redis_client

    redis_client().delete(key("health-sweep"))
    admin = django_user_model.objects.create_superuser("sweeper", "sweeper@example.com", "pw-sweeper-1")
    client.force_login(admin)
    assert "no sweep recorded yet" in client.get("/admin/").content.decode()

    fleet(4, "shown", last_heartbeat_at=timezone.now(), healthy_since=timezone.now())
    (silent,) = fleet(1, "shown-silent", last_heartbeat_at=timezone.now() - timedelta(hours=1))
    fleet_evaluate()

    metrics = admin_api.get("/metrics").content.decode()
    assert 'swarm_drone_health_sweep_drones{step="pinged"} 5.0' in metrics
    assert 'swarm_drone_health_sweep_drones{step="evaluated"} 1.0' in metrics
    assert 'swarm_drone_health_sweep_drones{step="acted"} 1.0' in metrics
    assert "swarm_drone_health_sweep_seconds " in metrics and "swarm_drone_health_sweep_age_seconds " in metrics
    page = client.get("/admin/").content.decode()
    assert "5 pinged, 1 evaluated, 1 acted on" in page and "Late" not in page

    record = json.loads(redis_client().get(key("health-sweep")))
    record["at"] -= 3600
    redis_client().set(key("health-sweep"), json.dumps(record))
    assert "is Celery beat running?" in client.get("/admin/").content.decode()
