"""The agent's half of the terminal and system-log relay: from the agent's socket to the browser's, by session id.

The agent multiplexes every session over its one WebSocket (see
agent/swarm_agent/terminal.py for the frames). Whatever it sends about a
session goes to that session's channel-layer group, which only the browser
consumer serving the session joins; the group name carries the drone's id,
so a drone can only ever address its own sessions. Browser and agent may be
connected to different replicas: the channel layer carries it between them.
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


def terminal_group(drone_id: int, session_id: str) -> str:
    return f"terminal.{int(drone_id)}.{session_id}"


def syslog_group(drone_id: int, session_id: str) -> str:
    return f"syslog.{int(drone_id)}.{session_id}"


def input_frame(session_id: str, data: bytes) -> bytes:
    """What the agent receives for keystrokes of one session."""
    return bytes([INPUT_FRAME]) + uuid.UUID(hex=session_id).bytes + data


async def forward_agent_frame(drone_id: int, raw: bytes) -> str | None:
    """An output frame from the agent → the session's browser. Returns the session id (None: not a frame)."""
    if len(raw) <= 1 + SESSION_ID_BYTES or raw[0] != OUTPUT_FRAME:
        return None
    session_id = uuid.UUID(bytes=bytes(raw[1:1 + SESSION_ID_BYTES])).hex
    await get_channel_layer().group_send(terminal_group(drone_id, session_id),
                                         {"type": "terminal.output", "data": bytes(raw[1 + SESSION_ID_BYTES:])})
    return session_id


async def forward_terminal_message(drone_id: int, message: dict) -> None:
    """A terminal control message from the agent (opened, exit, acks, pong, error) → the session's browser."""
    session_id = session_hex(message.get("session"))
    if session_id is not None:
        kind = message["type"].removeprefix("terminal_")
        await get_channel_layer().group_send(terminal_group(drone_id, session_id),
                                             {**message, "type": f"terminal.{kind}", "session": session_id})


async def forward_syslog_message(drone_id: int, message: dict) -> None:
    """System-log lines (or its start and end) from the agent → the viewer's socket."""
    session_id = session_hex(message.get("session"))
    if session_id is not None:
        kind = message["type"].removeprefix("syslog_")
        await get_channel_layer().group_send(syslog_group(drone_id, session_id),
                                             {**message, "type": f"syslog.{kind}", "session": session_id})


async def agent_gone(drone_id: int, session_ids) -> None:
    """The agent's socket closed: each of its terminal sessions ends, and the browsers say so."""
    layer = get_channel_layer()
    for session_id in session_ids:
        await layer.group_send(terminal_group(drone_id, session_id),
                               {"type": "terminal.exit", "session": session_id, "exit_status": None,
                                "reason": "the agent disconnected"})
