"""Group notices: batched per event loop, sent only to groups with members (swarm/core/group_notices.py)."""
import asyncio
import threading
import time
import uuid

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer

from conftest import server_loop_in_thread
from swarm.core import event_loop, group_notices
from swarm.core.channel_layer import RedisChannelLayer


def group(name: str) -> str:
    return f"test-{name}-{uuid.uuid4().hex[:12]}"


async def receive(layer, channel: str, timeout: float = 5.0) -> dict:
    return await asyncio.wait_for(layer.receive(channel), timeout)


def test_the_configured_layer_tells_which_groups_have_members():
    async def run():
        layer = get_channel_layer()
        assert isinstance(layer, RedisChannelLayer)
        watched, empty, stale = group("watched"), group("empty"), group("stale")
        channel = await layer.new_channel()
        await layer.group_add(watched, channel)
        await layer.group_add(stale, channel)
        # A member that joined longer ago than group_expiry has expired.
        connection = layer.connection(layer.consistent_hash(stale))
        await connection.zadd(layer._group_key(stale), {channel: time.time() - layer.group_expiry - 10})
        try:
            assert await layer.groups_with_members([watched, empty, stale, watched]) == {watched}
            assert await connection.zcard(layer._group_key(stale)) == 0, "the expired member was removed"
            assert await layer.groups_with_members([]) == set()
        finally:
            await layer.group_discard(watched, channel)

    asyncio.run(run())


def test_notices_queued_together_take_one_lookup_and_reach_only_watched_groups_in_order(monkeypatch):
    layer = get_channel_layer()
    lookups, sends = [], []
    lookup, send = layer.groups_with_members, layer.group_send

    async def counting_lookup(groups):
        groups = list(groups)
        lookups.append(groups)
        return await lookup(groups)

    async def counting_send(name, message):
        sends.append(name)
        await send(name, message)

    monkeypatch.setattr(layer, "groups_with_members", counting_lookup)
    monkeypatch.setattr(layer, "group_send", counting_send)
    watched, unwatched = group("watched"), group("unwatched")

    async def run():
        channel = await layer.new_channel()
        await layer.group_add(watched, channel)
        try:
            for n in range(5):
                group_notices.notify(watched, {"type": "test.notice", "n": n})
                group_notices.notify(unwatched, {"type": "test.notice", "n": n})
            await group_notices.drain()
            return [(await receive(layer, channel))["n"] for _ in range(5)]
        finally:
            await layer.group_discard(watched, channel)

    assert asyncio.run(run()) == [0, 1, 2, 3, 4]
    assert len(lookups) == 1 and len(lookups[0]) == 10, "one lookup for the whole batch"
    assert sends == [watched] * 5, "nothing is sent to a group nobody is in"


def test_from_a_thread_a_notice_goes_through_the_server_loop_and_without_one_it_is_sent_at_once(monkeypatch):
    layer = get_channel_layer()
    watched = group("threads")

    async def join():
        channel = await layer.new_channel()
        await layer.group_add(watched, channel)
        return channel

    # No server loop (Celery, management commands): sent before notify_from_thread returns.
    monkeypatch.setattr(event_loop, "_server_loop", None)
    monkeypatch.setattr(event_loop, "_server_thread", None)
    reader = asyncio.new_event_loop()
    try:
        channel = reader.run_until_complete(join())
        group_notices.notify_from_thread(watched, {"type": "test.notice", "n": "sync"})
        assert reader.run_until_complete(receive(layer, channel))["n"] == "sync"
        reader.run_until_complete(layer.group_discard(watched, channel))
    finally:
        reader.close()

    # A server loop: the notice is handed to it and sent from there.
    with server_loop_in_thread() as (loop, loop_thread):
        channel = asyncio.run_coroutine_threadsafe(join(), loop).result(5)
        sent_on = []
        send = layer.group_send

        async def noting_send(name, message):
            sent_on.append(threading.get_ident())
            await send(name, message)

        monkeypatch.setattr(layer, "group_send", noting_send)
        group_notices.notify_from_thread(watched, {"type": "test.notice", "n": "loop"})
        assert asyncio.run_coroutine_threadsafe(receive(layer, channel), loop).result(10)["n"] == "loop"
        assert sent_on == [loop_thread.ident]
        asyncio.run_coroutine_threadsafe(layer.group_discard(watched, channel), loop).result(5)


def test_a_redis_failure_is_logged_and_never_raised(monkeypatch, caplog):
    layer = get_channel_layer()

    async def broken(groups):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(layer, "groups_with_members", broken)

    async def run():
        group_notices.notify(group("any"), {"type": "test.notice"})
        await group_notices.drain()

    asyncio.run(run())
    assert "could not notify" in caplog.text


@pytest.mark.parametrize("members", [True, False])
def test_a_layer_without_the_lookup_gets_every_notice(monkeypatch, members):
    layer = InMemoryChannelLayer()
    monkeypatch.setattr(group_notices, "get_channel_layer", lambda: layer)
    name = group("memory")

    async def run():
        channel = await layer.new_channel()
        if members:
            await layer.group_add(name, channel)
        group_notices.notify(name, {"type": "test.notice", "n": 1})
        await group_notices.drain()
        if members:
            return (await receive(layer, channel))["n"]
        return None

    assert asyncio.run(run()) == (1 if members else None)
