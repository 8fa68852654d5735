"""The agent's poll loops: a dropped kept-alive connection is retried once quietly; a real failure warns."""
from __future__ import annotations

import asyncio
import logging

import httpx

from swarm_agent.plugins import poll_forever


def run_steps(outcomes: list) -> int:
    """Run poll_forever over `outcomes` (an exception to raise or a value to return), then stop it."""
    calls = 0

    async def step():
        nonlocal calls
        calls += 1
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is None:
            raise asyncio.CancelledError
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def main():
        try:
            await poll_forever(step, wakeup=asyncio.Event(), interval=lambda: 0.01, what="test poll")
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return calls


def test_one_dropped_connection_is_retried_without_a_warning(caplog):
    caplog.set_level(logging.DEBUG, logger="swarm_agent.plugins")
    assert run_steps([httpx.ReadError(""), False]) == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_failure_that_persists_warns_naming_the_error(caplog):
    caplog.set_level(logging.DEBUG, logger="swarm_agent.plugins")
    run_steps([httpx.ConnectError("refused"), httpx.ConnectError("refused"), False])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["test poll failed: ConnectError: refused"]
