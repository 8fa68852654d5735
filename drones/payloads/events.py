"""The one place payload code writes event rows and tells live viewers that a rollout moved.

Event rows are the deploy log: every rollout state change, every per-drone
state change, every dispatch, revert, drift and reconcile. Live notices go
through swarm.core.group_notices (batched, only to groups someone listens
to); they carry no state, the admin page reads it from the database.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction

from drones.payloads.models import PayloadEvent
from swarm.core import group_notices

logger = logging.getLogger(__name__)

ROLLOUTS_GROUP = "payload-rollouts"


def rollout_group(rollout_id: int) -> str:
    """Channel-layer group of everyone watching one rollout."""
    return f"payload-rollout-{int(rollout_id)}"


@dataclass
class EventBatch:
    """Event rows collected during one transaction and written with one INSERT."""

    rows: list[PayloadEvent] = field(default_factory=list)

    def add(self, **fields) -> None:
        self.rows.append(PayloadEvent(**fields))

    def write(self) -> int:
        if self.rows:
            PayloadEvent.objects.bulk_create(self.rows)
        count = len(self.rows)
        self.rows = []
        return count


def _changed(rollout_id: int) -> dict:
    return {"type": "rollout.changed", "rollout_id": int(rollout_id)}


async def emit_rollout_changed_async(*, rollout_id: int) -> None:
    """`emit_rollout_changed_on_commit` for code on the event loop, after its own commit."""
    group_notices.notify(rollout_group(rollout_id), _changed(rollout_id))
    group_notices.notify(ROLLOUTS_GROUP, _changed(rollout_id))


def emit_rollout_changed_on_commit(*, rollout_id: int) -> None:
    """After commit, tell the rollout's live page (and the rollout list) that it changed."""

    def notify() -> None:
        message = _changed(rollout_id)
        group_notices.notify_from_thread(rollout_group(rollout_id), message)
        group_notices.notify_from_thread(ROLLOUTS_GROUP, message)

    transaction.on_commit(notify)
