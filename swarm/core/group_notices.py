"""Notices to channel-layer groups, batched per event loop and sent only to groups someone listens to.

Live views (the admin's build page, over a WebSocket) join a group and are
told when something they show changed. The request that changed it should
not wait for Redis to pass that on, nor pay two Redis round trips per notice
when, as for most builds most of the time, nobody is watching.

`notify()` queues a notice on the running event loop and returns at once; one
task per loop sends what has queued up: a single `groups_with_members()` call
(swarm/core/channel_layer.py) for the whole batch, then `group_send` for the
groups that have members, in the order the notices were queued. Under load a
batch holds every notice queued while the previous batch was in flight.

`notify_from_thread()` is the same for sync code: on a server it hands the
notice to the server's loop (swarm/core/event_loop.py); elsewhere (Celery,
management commands, tests) it sends before it returns.

Notices are hints to live views that re-read what they show: one lost to a
Redis outage is logged, never raised to the request that caused it.
"""
from __future__ import annotations

import asyncio
import logging
import weakref

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from swarm.core import event_loop

logger = logging.getLogger(__name__)


async def deliver(notices: list[tuple[str, dict]]) -> None:
    """Send `(group, message)` notices through the channel layer, skipping groups with no members; never raises."""
    try:
        await deliver_or_raise(notices)
    except Exception:  # noqa: BLE001 - a live view missing an update must never fail a request
        logger.warning("could not notify %d group(s)", len(notices), exc_info=True)


async def deliver_or_raise(notices: list[tuple[str, dict]]) -> None:
    """`deliver`, but a channel-layer failure raises (for callers that record what they sent)."""
    layer = get_channel_layer()
    if layer is None or not notices:
        return
    if hasattr(layer, "groups_with_members"):
        listened = await layer.groups_with_members(group for group, _ in notices)
    else:
        listened = {group for group, _ in notices}
    for group, message in notices:
        if group in listened:
            await layer.group_send(group, message)


class GroupNotices:
    """The notices queued on one event loop and the task sending them."""

    def __init__(self):
        self._queued: list[tuple[str, dict]] = []
        self._sender: asyncio.Task | None = None

    def notify(self, group: str, message: dict) -> None:
        """Queue a notice (call on this loop); the sender task starts on the loop's next turn."""
        self._queued.append((group, message))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    async def _send_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                await deliver(batch)
        finally:
            self._sender = None

    async def drain(self) -> None:
        """Wait until every notice queued so far is sent (tests, shutdown)."""
        while self._sender is not None:
            await asyncio.wait({self._sender})


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupNotices] = weakref.WeakKeyDictionary()


def _for_loop(loop: asyncio.AbstractEventLoop) -> GroupNotices:
    notices = _by_loop.get(loop)
    if notices is None:
        notices = _by_loop[loop] = GroupNotices()  # holds no reference to the loop: the entry dies with it
    return notices


def notify(group: str, message: dict) -> None:
    """Queue a notice from code running on an event loop."""
    _for_loop(asyncio.get_running_loop()).notify(group, message)


def notify_from_thread(group: str, message: dict) -> None:
    """Queue a notice from sync code: on the server's loop (or a Celery worker's own) when there is one,
    else send it now."""
    loop = event_loop.server_loop_for_other_threads() or event_loop.background_loop()
    if loop is not None:
        loop.call_soon_threadsafe(notify, group, message)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # sync code running on an event loop's own thread
        notify(group, message)
        return
    try:
        async_to_sync(deliver)([(group, message)])
    except Exception:  # noqa: BLE001 - e.g. called where no loop may be started
        logger.warning("could not notify %s", group, exc_info=True)


async def drain() -> None:
    """Wait until the notices queued on this loop are sent."""
    notices = _by_loop.get(asyncio.get_running_loop())
    if notices is not None:
        await notices.drain()
