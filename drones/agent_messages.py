"""Handlers for the agent message types the drones app itself understands (besides pong)."""
import logging

from drones.ws_handlers import register_ws_handler

logger = logging.getLogger(__name__)


def handle_command_result(drone_id: int, message: dict) -> None:
    """The agent acknowledged a restart command; the ladder judges success by the drone's health."""
    logger.info("drone %s: %s -> ok=%s %s", drone_id, message.get("command"), message.get("ok"),
                message.get("detail", ""))


def register_handlers() -> None:
    """Called from DronesConfig.ready()."""
    register_ws_handler("command_result", handle_command_result)
