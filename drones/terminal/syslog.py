"""`/ws/syslog/<drone>/`: a drone's system log, tailed by its agent. Authenticates, checks access, forwards.

Staff with `drones.view_drone_syslog`. The consumer asks the agent for a
tail (`syslog_open` with a session id and the line filter) and forwards the
batches of lines the agent sends (swarm_agent/syslog.py) from the session's
channel-layer group; the page sends `{"type": "filter", "text": …}` to
restart the tail with another filter. Closing the page stops the agent's tail.
"""
from __future__ import annotations

import json
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from drones.events import drone_send_async
from drones.models import Drone
from drones.terminal import relay
from swarm.core.consumers import CLOSE_FORBIDDEN, staff_permitted

SYSLOG_PERMISSION = "drones.view_drone_syslog"


class DroneSyslogConsumer(AsyncJsonWebsocketConsumer):
    """One viewer of one drone's system log."""

    drone_id: int | None = None

    async def connect(self):
        name = self.scope["url_route"]["kwargs"]["drone"]

        def allowed_drone():
            if not staff_permitted(self.scope.get("user"), SYSLOG_PERMISSION):
                return None
            return Drone.objects.filter(name=name).values_list("pk", "ws_connected").first()

        found = await database_sync_to_async(allowed_drone)()
        if found is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.drone_id, connected = found
        self.session_id = uuid.uuid4().hex
        self.group = relay.syslog_group(self.drone_id, self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if not connected:
            await self.send_json({"type": "end", "detail": f"the agent of {name} is not connected"})
        await self._open("")

    async def _open(self, text_filter: str):
        await drone_send_async(self.drone_id, {"type": "syslog_open", "session": self.session_id,
                                               "filter": text_filter[:200]})

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "filter" and isinstance(content.get("text"), str):
            await self.send_json({"type": "reset"})
            await self._open(content["text"])

    async def disconnect(self, code):
        if self.drone_id is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await drone_send_async(self.drone_id, {"type": "syslog_close", "session": self.session_id})

    async def syslog_started(self, event):
        await self.send_json({"type": "started", "source": event.get("source", "")})

    async def syslog_lines(self, event):
        lines = [line for line in event.get("lines") or [] if isinstance(line, str)]
        await self.send_json({"type": "lines", "lines": lines, "skipped": int(event.get("skipped") or 0)})

    async def syslog_end(self, event):
        await self.send_json({"type": "end", "detail": str(event.get("detail", ""))[:300]})

    @classmethod
    async def encode_json(cls, content):
        return json.dumps(content, ensure_ascii=False)
