"""`/ws/payloads/rollouts/<id>/`: the admin's live rollout page. Authenticates, checks access, forwards.

Staff users with the view permission only. On connect it sends the
rollout's snapshot (state, progress, per-drone states); every
`rollout.changed` notice (drones.payloads.events, after each commit that
moved the rollout) makes it read a fresh snapshot from the database and
forward it — at most a few per second, so a wave of 50 drones finishing
together is one update, not fifty.
"""
from __future__ import annotations

import asyncio
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from drones.payloads.events import rollout_group

MIN_SECONDS_BETWEEN_SNAPSHOTS = 0.3


@database_sync_to_async
def _allowed(user) -> bool:
    return bool(user and user.is_active and user.is_staff and user.has_perm("drones.view_rollout"))


@database_sync_to_async
def rollout_snapshot(rollout_id: int) -> dict | None:
    """What the live page shows: the rollout, its progress and every target."""
    from drones.payloads.engine import rollout_progress
    from drones.payloads.models import Rollout
    from drones.payloads.selectors import rollout_targets

    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None:
        return None
    targets = [{"id": target.pk, "drone": target.drone.name, "type": target.payload_version.payload_type.name,
                "version": target.payload_version.version, "state": target.state, "reason": target.reason,
                "canary": target.is_canary, "revert": target.revert_state}
               for target in rollout_targets(rollout)]
    return {"type": "snapshot", "state": rollout.state, "reason": rollout.state_reason,
            "promoted": rollout.promoted_at is not None, "progress": rollout_progress(rollout), "targets": targets}


class RolloutConsumer(AsyncJsonWebsocketConsumer):
    """Pushes one rollout's state to an admin page whenever it changes."""

    async def connect(self):
        self.rollout_id = int(self.scope["url_route"]["kwargs"]["rollout_id"])
        if not await _allowed(self.scope.get("user")):
            await self.close(code=4403)
            return
        self.group = rollout_group(self.rollout_id)
        self._last_sent = 0.0
        self._pending: asyncio.Task | None = None
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._send_snapshot()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if getattr(self, "_pending", None) is not None:
            self._pending.cancel()

    async def _send_snapshot(self):
        self._last_sent = time.monotonic()
        snapshot = await rollout_snapshot(self.rollout_id)
        if snapshot is not None:
            await self.send_json(snapshot)

    async def _send_later(self, delay: float):
        await asyncio.sleep(delay)
        self._pending = None
        await self._send_snapshot()

    async def rollout_changed(self, event):
        if self._pending is not None:
            return  # a snapshot is already due; it will include this change
        wait = MIN_SECONDS_BETWEEN_SNAPSHOTS - (time.monotonic() - self._last_sent)
        if wait <= 0:
            await self._send_snapshot()
        else:
            self._pending = asyncio.ensure_future(self._send_later(wait))
