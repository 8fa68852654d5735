"""`/ws/topology/`: the topology page's socket. Authenticates, checks the permission, forwards.

On connect it sends the snapshot (drones/topology/history.py), then every
frame the feed sends to the `topology` group. The page may ask for a fresh
snapshot, for the fleet at a past moment (`scrub`) or for one drone's
details (`detail`); each is one read through drones.topology.history.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from drones.topology.feed import TOPOLOGY_GROUP
from swarm.core.consumers import CLOSE_FORBIDDEN, staff_permitted

VIEW_PERMISSION = "drones.view_drone"


class TopologyConsumer(AsyncJsonWebsocketConsumer):
    """The live fleet for one topology page."""

    joined = False

    async def connect(self):
        if not await database_sync_to_async(staff_permitted)(self.scope.get("user"), VIEW_PERMISSION):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(TOPOLOGY_GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        await self._send_snapshot()

    async def disconnect(self, code):
        if self.joined:
            await self.channel_layer.group_discard(TOPOLOGY_GROUP, self.channel_name)

    async def _send_snapshot(self):
        from drones.topology.history import topology_snapshot

        await self.send_json(await database_sync_to_async(topology_snapshot)())

    async def receive_json(self, content, **kwargs):
        from drones.topology.history import HISTORY_SECONDS, drone_detail, fleet_state_at

        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "snapshot":
            await self._send_snapshot()
        elif kind == "scrub" and isinstance(content.get("at"), (int, float)):
            now = datetime.now(tz=dt_timezone.utc)
            at = datetime.fromtimestamp(float(content["at"]), tz=dt_timezone.utc)
            at = min(max(at, now - timedelta(seconds=HISTORY_SECONDS)), now)
            answer = await database_sync_to_async(fleet_state_at)(at)
            answer["request"] = content.get("request")
            await self.send_json(answer)
        elif kind == "detail" and isinstance(content.get("id"), int):
            detail = await database_sync_to_async(drone_detail)(content["id"])
            if detail is not None:
                await self.send_json(detail)

    async def topology_frame(self, event):
        await self.send_json(event["frame"])
