"""Handlers for the agent message types the drones app itself understands (besides pong).

System-log messages are passed on to the viewer of their session
(drones/terminal/relay.py; terminal messages the consumer forwards itself,
to the channel of the session's browser); `host_keys` pins the drone's SSH
host keys the first time it reports them.
"""
import logging

from drones.terminal import relay
from drones.ws_handlers import register_ws_handler

logger = logging.getLogger(__name__)


def handle_command_result(drone_id: int, message: dict) -> None:
    """The agent acknowledged a restart command; the ladder judges success by the drone's health."""
    logger.info("drone %s: %s -> ok=%s %s", drone_id, message.get("command"), message.get("ok"),
                message.get("detail", ""))


def handle_host_keys(drone_id: int, message: dict) -> None:
    """The agent reported its SSH host keys over its authenticated socket: pin them if none are pinned yet."""
    from drones.terminal.ssh import drone_host_keys_pin

    keys = message.get("keys")
    if isinstance(keys, list):
        drone_host_keys_pin(drone_id=drone_id, keys=[key for key in keys if isinstance(key, str)])


def register_handlers() -> None:
    """Called from DronesConfig.ready()."""
    register_ws_handler("command_result", handle_command_result)
    register_ws_handler("host_keys", handle_host_keys)
    for message_type in relay.SYSLOG_MESSAGES:
        register_ws_handler(message_type, relay.forward_syslog_message)
