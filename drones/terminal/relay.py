"""The agent's half of the terminal and system-log relay: from the agent's socket to the browser's, by session id.

The agent multiplexes every session over its one WebSocket (see
agent/swarm_agent/terminal.py for the frames). A keystroke should cost as
few Redis round trips as possible, so a terminal's bytes travel between the
two consumers' own channels, never through a group: the browser's consumer
names its channel in `terminal_open`; the agent's consumer (wherever it runs)
remembers it for that session (`TerminalRoutes`) and answers `terminal_opened`
with its own channel, to which the browser's consumer then sends keystrokes
and control messages. Only `terminal_open` itself goes to the drone's group
(`drones.events.drone_send_async`): it must find whichever replica holds the
agent. A drone can only ever reach the channels of sessions opened on it,
and browser and agent may be on different replicas: the channel layer
carries it between them. System-log lines (a few batches a second) go to a
per-session group.
"""
from __future__ import annotations

import uuid

from channels.layers import get_channel_layer

INPUT_FRAME, OUTPUT_FRAME = 0x01, 0x02
SESSION_ID_BYTES = 16
#: Agent messages about a terminal session, forwarded to the browser's consumer as `terminal.<kind>`.
TERMINAL_MESSAGES = ("terminal_opened", "terminal_exit", "terminal_input_ack", "terminal_pong", "terminal_error")
#: Agent messages about a system-log tail, forwarded as `syslog.<kind>`.
SYSLOG_MESSAGES = ("syslog_started", "syslog_lines", "syslog_end")


def session_hex(value) -> str | None:
    """A session id in canonical hex, or None when it is not one."""
    try:
        return uuid.UUID(hex=str(value)).hex
    except ValueError:
        return None


def syslog_group(drone_id: int, session_id: str) -> str:
    return f"syslog.{int(drone_id)}.{session_id}"


def input_frame(session_id: str, data: bytes) -> bytes:
    """What the agent receives for keystrokes of one session."""
    return bytes([INPUT_FRAME]) + uuid.UUID(hex=session_id).bytes + data


class TerminalRoutes:
    """The browser channels of the terminal sessions one agent connection carries (kept by its consumer)."""

    def __init__(self):
        self.channels: dict[str, str] = {}

    def opening(self, message: dict) -> dict:
        """A `terminal_open` on its way to the agent: remember who asked, and pass on the rest."""
        session_id = session_hex(message.get("session"))
        reply = message.get("reply_channel")
        if session_id and isinstance(reply, str):
            self.channels[session_id] = reply
        return {key: value for key, value in message.items() if key != "reply_channel"}

    def __bool__(self) -> bool:
        return bool(self.channels)


async def forward_agent_frame(routes: TerminalRoutes, raw: bytes) -> None:
    """An output frame from the agent → the session's browser (dropped for a session this connection never opened)."""
    if len(raw) <= 1 + SESSION_ID_BYTES or raw[0] != OUTPUT_FRAME:
        return
    channel = routes.channels.get(uuid.UUID(bytes=bytes(raw[1:1 + SESSION_ID_BYTES])).hex)
    if channel is not None:
        await get_channel_layer().send(channel, {"type": "terminal.output", "data": bytes(raw[1 + SESSION_ID_BYTES:])})


async def forward_terminal_message(routes: TerminalRoutes, message: dict, *, agent_channel: str) -> None:
    """A terminal control message from the agent (opened, exit, acks, pong, error) → the session's browser."""
    session_id = session_hex(message.get("session"))
    channel = routes.channels.get(session_id) if session_id else None
    if channel is None:
        return
    kind = message["type"].removeprefix("terminal_")
    event = {**message, "type": f"terminal.{kind}", "session": session_id}
    if kind == "opened":
        event["agent_channel"] = agent_channel  # where the browser's consumer sends keystrokes from now on
    if kind in ("exit", "error"):
        routes.channels.pop(session_id, None)
    await get_channel_layer().send(channel, event)


async def forward_syslog_message(drone_id: int, message: dict) -> None:
    """System-log lines (or its start and end) from the agent → the viewer's socket."""
    session_id = session_hex(message.get("session"))
    if session_id is not None:
        kind = message["type"].removeprefix("syslog_")
        await get_channel_layer().group_send(syslog_group(drone_id, session_id),
                                             {**message, "type": f"syslog.{kind}", "session": session_id})


async def agent_gone(routes: TerminalRoutes) -> None:
    """The agent's socket closed: each of its terminal sessions ends, and the browsers say so."""
    layer = get_channel_layer()
    for session_id, channel in list(routes.channels.items()):
        await layer.send(channel, {"type": "terminal.exit", "session": session_id, "exit_status": None,
                                   "reason": "the agent disconnected"})
    routes.channels.clear()
