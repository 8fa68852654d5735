"""`/ws/agent/`: one WebSocket per drone. Authenticates, forwards, and hands off.

The consumer only authenticates the drone token, joins the drone's group,
forwards server messages (sent through `drones.events.drone_send`) to the
agent as JSON, records pongs, and passes any other agent message type to
the handler registered in `drones.ws_handlers`. Binary frames carry terminal
I/O both ways and terminal messages go straight to the channel of the
session's browser (drones/terminal/relay.py); when the socket closes, the
terminal sessions it carried end.
"""
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from drones import services
from drones.events import drone_group
from drones.terminal import relay
from drones.ws_handlers import ws_handler_for
from swarm.core.authentication import authenticate_token, drone_token_id

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def presented_token(scope) -> str:
    """The bearer token from the handshake's Authorization header, or `?token=`."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            keyword, _, token = value.decode("latin-1").partition(" ")
            if keyword.lower() == "bearer":
                return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode())
    return (query.get("token") or [""])[0].strip()


@database_sync_to_async
def _drone_id_for_token(plaintext: str) -> int | None:
    return drone_token_id(authenticate_token(plaintext) if plaintext else None)


class AgentConsumer(AsyncJsonWebsocketConsumer):
    """The server end of an agent's WebSocket."""

    drone_id: int | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.terminal_routes = relay.TerminalRoutes()

    async def connect(self):
        self.drone_id = await _drone_id_for_token(presented_token(self.scope))
        if self.drone_id is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.group_name = drone_group(self.drone_id)
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()
        self.connected_at = await database_sync_to_async(services.drone_ws_connected)(drone_id=self.drone_id)
        await self.send_json({"type": "hello", "drone_id": self.drone_id})

    async def disconnect(self, code):
        if self.drone_id is None:
            return
        await self.channel_layer.group_discard(self.group_name, self.channel_name)
        if self.terminal_routes:
            await relay.agent_gone(self.terminal_routes)
        await database_sync_to_async(services.drone_ws_disconnected)(
            drone_id=self.drone_id, connected_at=getattr(self, "connected_at", None))

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if bytes_data is not None:
            await relay.forward_agent_frame(self.terminal_routes, bytes_data)
            return
        await super().receive(text_data=text_data, **kwargs)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_json({"type": "error", "error": "invalid", "detail": "messages are JSON objects with a type"})
            return
        message_type = content["type"]
        if message_type == "pong":
            await database_sync_to_async(services.drone_pong_record)(
                drone_id=self.drone_id, ping_id=str(content.get("id", "")))
            return
        if message_type in relay.TERMINAL_MESSAGES:
            await relay.forward_terminal_message(self.terminal_routes, content, agent_channel=self.channel_name)
            return
        handler = ws_handler_for(message_type)
        if handler is None:
            await self.send_json({"type": "error", "error": "unknown_type",
                                  "detail": f"no handler for message type {message_type!r}"})
            return
        try:
            if _is_coroutine_function(handler):
                await handler(self.drone_id, content)
            else:
                await database_sync_to_async(handler)(self.drone_id, content)
        except Exception:  # noqa: BLE001 - one bad message must not drop the drone's connection
            logger.exception("handler for agent message %r of drone %s failed", message_type, self.drone_id)
            await self.send_json({"type": "error", "error": "handler_failed", "detail": message_type})

    async def agent_message(self, event):
        """A server message for this drone (from `drones.events.drone_send`, or a terminal's browser)."""
        message = event["message"]
        if message.get("type") == "terminal_open":
            message = self.terminal_routes.opening(message)
        await self.send_json(message)

    async def agent_binary(self, event):
        """A binary frame for the agent (terminal input, from `drones.events.drone_send_bytes_async`)."""
        await self.send(bytes_data=event["data"])

    async def agent_close(self, event):
        """Close this connection from the server side."""
        await self.close(code=event.get("code", 4000))


def _is_coroutine_function(func) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))
