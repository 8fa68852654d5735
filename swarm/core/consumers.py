"""Browser WebSockets of the admin that belong to no app: live page notices and the control plane's log tail.

Both only authenticate (the admin session), check the permission, and forward:

* `/ws/admin/live/?topics=builds,execution:42` — `LiveAdminConsumer` joins the
  topics' groups and passes each notice on (swarm/core/live.py);
* `/ws/logs/` — `ControlPlaneLogConsumer` forwards the capped Redis stream
  every process logs to (swarm/core/logstream.py), filtered as the page asks.
"""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from swarm.core.live import live_group, live_topic_permission

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
MAX_TOPICS = 20
#: Permission to tail the control plane's own logs (they go with the audit log).
LOG_VIEW_PERMISSION = "core.view_auditlogentry"


def staff_permitted(user, permission: str | None) -> bool:
    """An active staff user holding `permission` (superusers hold all); anonymous and non-staff never."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if not (user.is_active and user.is_staff):
        return False
    return permission is None or user.has_perm(permission)


class LiveAdminConsumer(AsyncJsonWebsocketConsumer):
    """Forwards "something you show changed" notices to a live admin page."""

    groups_joined: list[str]

    async def connect(self):
        self.groups_joined = []
        query = parse_qs(self.scope.get("query_string", b"").decode())
        topics = [topic for topic in ",".join(query.get("topics", [])).split(",") if topic][:MAX_TOPICS]
        user = self.scope.get("user")
        # A page may ask for topics the user cannot see (the dashboard shows what it can): those are left out.
        allowed = await database_sync_to_async(
            lambda: [topic for topic in topics if (permission := live_topic_permission(topic)) is not None
                     and staff_permitted(user, permission)])()
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        topics = allowed
        for topic in topics:
            group = live_group(topic)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.accept()
        await self.send_json({"type": "hello", "topics": topics})

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def live_changed(self, event):
        await self.send_json({"type": "changed", "topic": event["topic"]})


class ControlPlaneLogConsumer(AsyncJsonWebsocketConsumer):
    """Tails the control plane's log stream for the admin's log page, filtered server-side.

    The page sends `{"type": "filter", "process", "level", "logger", "text"}`
    whenever the operator changes a filter; the consumer answers with the
    recent matching lines, then forwards new ones as they are logged. When the
    stream's Redis is unreachable it says so and tries again every few seconds.
    It needs no channel layer (it reads the stream itself), so it keeps
    working, and keeps saying what is wrong, whatever the layer's state.
    """

    channel_layer_alias = "no-channel-layer"  # not configured: channels then skips the layer
    tail_task: asyncio.Task | None = None

    async def connect(self):
        user = self.scope.get("user")
        if not await database_sync_to_async(staff_permitted)(user, LOG_VIEW_PERMISSION):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        self._restart({})

    async def disconnect(self, code):
        if self.tail_task is not None:
            self.tail_task.cancel()

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "filter":
            self._restart(content)

    def _restart(self, filters: dict) -> None:
        from swarm.core.logstream import LogFilter

        if self.tail_task is not None:
            self.tail_task.cancel()
        self.tail_task = asyncio.ensure_future(self._forward(LogFilter.from_message(filters)))

    async def _forward(self, log_filter) -> None:
        from swarm.core.logstream import tail

        try:
            async for message in tail(log_filter):
                await self.send_json(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket may be closing
            logger.debug("log tail ended", exc_info=True)
