"""Live admin pages: the one helper domain code calls when something an operator may be watching changed.

A live page (a list, a change page, the dashboard) subscribes to *topics*
over `/ws/admin/live/` (swarm.core.consumers.LiveAdminConsumer). A topic is
a name (`builds`, `drones`, `executions`) or a name and a key
(`execution:42`). Each app registers its topics with the permission needed
to watch them (`register_live_topic`, from its AppConfig.ready()), and calls
`live_changed()` when something they show changed. The notice carries no
data: the page fetches itself again and swaps the parts marked as live
(static/swarm/live.js), at most about once a second, so what it shows is
exactly what a reload would show.

Notices go through swarm.core.group_notices: batched, sent only to groups
someone is in, never raised to the caller.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import transaction

from swarm.core import group_notices

LIVE_EVENT = "live.changed"
TOPIC_PATTERN = re.compile(r"^(?P<name>[a-z][a-z_]{0,30})(?::(?P<key>[0-9A-Za-z_-]{1,40}))?$")


@dataclass(frozen=True)
class LiveTopic:
    """A topic name, the permission that lets a staff user watch it, and whether it takes a key."""

    name: str
    permission: str
    keyed: bool = False


_topics: dict[str, LiveTopic] = {}


def register_live_topic(*, name: str, permission: str, keyed: bool = False) -> None:
    """Declare a topic live pages may subscribe to (`keyed`: `name:<key>`, e.g. one execution)."""
    _topics[name] = LiveTopic(name=name, permission=permission, keyed=keyed)


def live_topic_permission(topic: str) -> str | None:
    """The permission a topic needs, or None when the topic is unknown or malformed."""
    match = TOPIC_PATTERN.match(topic or "")
    if match is None:
        return None
    declared = _topics.get(match.group("name"))
    if declared is None or declared.keyed != (match.group("key") is not None):
        return None
    return declared.permission


def live_group(topic: str) -> str:
    """The channel-layer group of a topic (`execution:42` → `live.execution.42`)."""
    return "live." + topic.replace(":", ".")


def _notice(topic: str) -> dict:
    return {"type": LIVE_EVENT, "topic": topic}


def live_changed(*topics: str) -> None:
    """Tell the pages watching `topics` that what they show changed (sync code; never raises)."""
    for topic in topics:
        group_notices.notify_from_thread(live_group(topic), _notice(topic))


def live_changed_on_commit(*topics: str) -> None:
    """`live_changed` once the surrounding transaction commits (pages then read the committed rows)."""
    transaction.on_commit(lambda: live_changed(*topics))


def live_changed_from_loop(*topics: str) -> None:
    """`live_changed` from code running on the event loop."""
    for topic in topics:
        group_notices.notify(live_group(topic), _notice(topic))
