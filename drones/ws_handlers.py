"""Registry of handlers for message types an agent sends over its WebSocket.

Other apps register their types at import time (e.g. in AppConfig.ready):

    register_ws_handler("build_output", handle_build_output)

A handler is `handler(drone_id: int, message: dict) -> None`, sync or async;
sync handlers run in a thread (they may use the ORM). The consumer itself
only handles `pong`.
"""
from collections.abc import Callable

WsHandler = Callable[[int, dict], object]

_handlers: dict[str, WsHandler] = {}


def register_ws_handler(message_type: str, handler: WsHandler) -> None:
    """Route agent messages of `message_type` to `handler` (one handler per type)."""
    existing = _handlers.get(message_type)
    if existing is not None and existing is not handler:
        raise ValueError(f"a handler for agent message type {message_type!r} is already registered: {existing!r}")
    _handlers[message_type] = handler


def ws_handler_for(message_type: str) -> WsHandler | None:
    """The handler registered for a message type, or None."""
    return _handlers.get(message_type)


def registered_ws_message_types() -> list[str]:
    """Every message type with a handler (for diagnostics)."""
    return sorted(_handlers)
