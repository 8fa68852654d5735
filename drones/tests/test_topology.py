"""The topology's feed, history and consumer, in this process against the real Redis and PostgreSQL."""
from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth import get_user_model
from django.utils import timezone

from drones.models import Drone, EscalationEvent, FleetSample
from drones.services import run_heartbeat_hooks
from drones.services.heartbeat import heartbeat_needs_sync_hooks
from drones.tests.conftest import register_drone
from drones.topology import feed
from drones.topology.consumer import TopologyConsumer
from drones.topology.history import activity_recent, fleet_sample_take, fleet_state_at, topology_snapshot


async def _listen():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(feed.TOPOLOGY_GROUP, channel)
    return layer, channel


def test_heartbeats_become_one_compact_frame_per_flush_and_only_for_watchers(monkeypatch):
    async def scenario():
        layer = get_channel_layer()
        sent = []
        original = layer.group_send

        async def recording(group, message):
            sent.append(group)
            await original(group, message)

        monkeypatch.setattr(layer, "group_send", recording)
        for drone_id in range(1, 201):  # nobody watches: counted, never sent
            feed.topology_heartbeat(drone_id)
        await asyncio.sleep(feed.FLUSH_SECONDS * 3)
        assert sent == []

        layer, channel = await _listen()
        for drone_id in range(1, 501):
            feed.topology_heartbeat(drone_id)
        feed.topology_pong(7, 2.5)
        feed.topology_changed(9, status="stale")
        feed.topology_event(9, level=1, action="restart_service", result="sent", detail="stale")
        frame = (await asyncio.wait_for(layer.receive(channel), 5))["frame"]
        await layer.group_discard(feed.TOPOLOGY_GROUP, channel)
        return frame, sent

    frame, sent = asyncio.run(scenario())
    assert sent == [feed.TOPOLOGY_GROUP], "one send for the whole batch"
    assert frame["hb"] == list(range(1, 501)) and frame["h0"] <= frame["t"]
    assert frame["act"] == {"hb": 500, "po": 1, "esc": 1}
    assert frame["po"] == [7]
    changes = {change["i"]: change for change in frame["ch"]}
    assert changes[7] == {"i": 7, "p": 2.5, "w": True} and changes[9] == {"i": 9, "s": "stale", "l": 1}
    assert frame["ev"][0]["a"] == "restart_service"
    seconds = activity_recent(seconds=60)
    assert sum(count for _, kind, count in seconds if kind == "hb") >= 700, "the waveform's history counts all"


def test_every_heartbeat_reaches_the_feed_through_its_hook(db):
    drone, _ = register_drone("hooked-1")
    assert not heartbeat_needs_sync_hooks(body={"metrics": {}}), "the hook has an event-loop variant"

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(feed.TOPOLOGY_GROUP, channel)
    try:
        run_heartbeat_hooks(drone_id=drone.pk, body={"metrics": {}})  # the view's path; off a server it sends now
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(feed.TOPOLOGY_GROUP, channel)
    assert message["frame"]["hb"] == [drone.pk]


def _step(drone, level, at, action="restart_service"):
    return EscalationEvent.objects.create(drone=drone, level=level, action=action,
                                          result="reset" if action == "reset" else "sent", at=at)


def test_the_fleet_as_it_was_levels_from_events_status_from_samples(db, settings):
    now = timezone.now()
    old, _ = register_drone("history-old")
    late, _ = register_drone("history-late")
    Drone.objects.filter(pk=old.pk).update(registered_at=now - timedelta(hours=2))
    Drone.objects.filter(pk=late.pk).update(registered_at=now - timedelta(minutes=20))
    _step(old, 1, now - timedelta(minutes=30))
    _step(old, 2, now - timedelta(minutes=25), "hard_restart")
    _step(old, 0, now - timedelta(minutes=10), "reset")
    FleetSample.objects.create(at=now - timedelta(minutes=26), drones={
        "i": [old.pk], "s": ["stale"], "p": [None], "w": [False], "hb": [40], "b": [0]})

    def level_and_status(minutes_ago):
        state = fleet_state_at(now - timedelta(minutes=minutes_ago))
        return {row[0]: (row[2], row[1]) for row in state["drones"]}

    assert level_and_status(40) == {old.pk: (0, None)}, "before any step: L0; no sample that close"
    assert level_and_status(27) == {old.pk: (1, None)}
    assert level_and_status(24) == {old.pk: (2, "stale")}, "the sample a minute before says stale"
    assert level_and_status(5) == {old.pk: (0, None), late.pk: (0, None)}, "reset, and the late drone exists now"
    assert [event["a"] for event in fleet_state_at(now - timedelta(minutes=24))["events"]] == [
        "hard_restart", "restart_service"]


def test_fleet_samples_are_compact_and_kept_for_the_retention(db, settings):
    settings.SWARM_TOPOLOGY_SAMPLE_RETENTION = 600
    drone, _ = register_drone("sampled-1")
    Drone.objects.filter(pk=drone.pk).update(ping_latency_ms=4.5, ws_connected=True,
                                             last_heartbeat_at=timezone.now() - timedelta(seconds=3))
    FleetSample.objects.create(at=timezone.now() - timedelta(seconds=601), drones={})
    sample = fleet_sample_take()
    assert list(FleetSample.objects.values_list("pk", flat=True)) == [sample.pk], "the expired sample is gone"
    assert sample.drones["i"] == [drone.pk] and sample.drones["p"] == [4.5] and sample.drones["w"] == [True]
    assert sample.drones["s"] == ["online"] and 2 <= sample.drones["hb"][0] <= 5 and sample.drones["b"] == [0]


@pytest.mark.django_db(transaction=True)
def test_the_consumer_refuses_non_staff_and_answers_snapshot_scrub_and_detail():
    drone, _ = register_drone("consumer-1", labels=["gpu"])
    Drone.objects.filter(pk=drone.pk).update(registered_at=timezone.now() - timedelta(hours=1), escalation_level=1)
    EscalationEvent.objects.create(drone=drone, level=1, action="restart_service", result="sent")
    staff = get_user_model().objects.create_user("watcher", is_staff=True)
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="view_drone"))
    outsider = get_user_model().objects.create_user("outsider", is_staff=False)

    async def session(user, requests):
        scope = {"type": "websocket", "path": "/ws/topology/", "headers": [], "query_string": b"",
                 "subprotocols": [], "url_route": {"args": (), "kwargs": {}}, "user": user}
        communicator = ApplicationCommunicator(TopologyConsumer.as_asgi(), scope)
        await communicator.send_input({"type": "websocket.connect"})
        connected = (await communicator.receive_output(10))["type"] == "websocket.accept"
        answers = []
        if connected:
            answers.append(json.loads((await communicator.receive_output(10))["text"]))
            for request in requests:
                await communicator.send_input({"type": "websocket.receive", "text": json.dumps(request)})
                answers.append(json.loads((await communicator.receive_output(10))["text"]))
            await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await communicator.wait(5)
        return connected, answers

    from django.contrib.auth.models import AnonymousUser

    assert asyncio.run(session(AnonymousUser(), []))[0] is False
    assert asyncio.run(session(outsider, []))[0] is False
    at = (timezone.now() - timedelta(minutes=1)).timestamp()
    connected, (snapshot, past, detail) = asyncio.run(session(staff, [
        {"type": "scrub", "at": at, "request": 3}, {"type": "detail", "id": drone.pk}]))
    assert connected
    (row,) = snapshot["drones"]
    assert (row["n"], row["g"], row["l"], row["s"]) == ("consumer-1", "unknown · gpu", 1, "online")
    assert snapshot["events"][0]["a"] == "restart_service" and snapshot["window"] == 3600
    assert past["type"] == "state_at" and past["request"] == 3 and past["drones"] == [[drone.pk, None, 0, None, None,
                                                                                         None]]
    assert detail["n"] == "consumer-1" and detail["labels"] == ["gpu"] and detail["events"][0]["l"] == 1
    assert topology_snapshot()["drones"][0]["b"] == 0
    # The consumer's reads ran on asgiref's thread: close its connection so the test database can be dropped.
    from channels.db import database_sync_to_async
    from django.db import connections

    asyncio.run(database_sync_to_async(connections.close_all)())
