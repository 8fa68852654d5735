"""Deploy states to the control plane over HTTP (`POST /payloads/agent/report`), coalesced per target.

Each state is queued the moment it happens. A terminal state (succeeded,
failed) is sent at once with everything queued before it; an intermediate
one waits up to `debounce` seconds for company, so a quick deploy costs one
request that carries downloading → installing → verifying → succeeded in
order, and a slow one still shows each state as it comes. A report that
fails (server away) is retried with backoff until it is delivered: the
server applies states forward-only and idempotently, so a repeat is harmless.
"""
from __future__ import annotations

import asyncio
import logging
import time

import httpx

logger = logging.getLogger(__name__)

TERMINAL = {"succeeded", "failed"}


class Reporter:
    """Queues and sends deploy reports for the agent's drone token (`api`: httpx.AsyncClient on /api/v1)."""

    def __init__(self, api: httpx.AsyncClient, *, debounce: float = 0.25, max_backoff: float = 30.0):
        self.api = api
        self.debounce = debounce
        self.max_backoff = max_backoff
        self._queued: dict[tuple[int, str], list[dict]] = {}
        self._current: dict[tuple[int, str], str] = {}
        self._senders: dict[tuple[int, str], asyncio.Task] = {}
        self._wake: dict[tuple[int, str], asyncio.Event] = {}

    def push(self, target_id: int, action: str, state: str, reason: str = "", current_sha256: str = "") -> None:
        """Queue one state (call on the event loop; from a thread use `loop.call_soon_threadsafe`)."""
        key = (int(target_id), action)
        self._queued.setdefault(key, []).append({"state": state, "reason": reason[:2000], "at": time.time()})
        if current_sha256 is not None and state in TERMINAL:
            self._current[key] = current_sha256
        event = self._wake.setdefault(key, asyncio.Event())
        if state in TERMINAL:
            event.set()
        task = self._senders.get(key)
        if task is None or task.done():
            self._senders[key] = asyncio.ensure_future(self._send_loop(key))

    async def _send_loop(self, key: tuple[int, str]) -> None:
        event = self._wake[key]
        backoff = 0.5
        while self._queued.get(key):
            if not any(item["state"] in TERMINAL for item in self._queued[key]):
                try:
                    await asyncio.wait_for(event.wait(), timeout=self.debounce)
                except asyncio.TimeoutError:
                    pass
            states = self._queued.pop(key, [])
            event.clear()
            if not states:
                break
            body = {"target_id": key[0], "action": key[1], "states": states,
                    "current_sha256": self._current.get(key, "") if any(s["state"] in TERMINAL for s in states)
                    else ""}
            try:
                response = await self.api.post("/payloads/agent/report", json=body)
                if response.status_code in (400, 404):
                    logger.warning("deploy report for target %s refused: %s %s", key[0], response.status_code,
                                   response.text[:200])
                    continue
                response.raise_for_status()
                backoff = 0.5
            except httpx.HTTPError as error:
                logger.warning("deploy report for target %s failed (%s); retrying in %.1f s", key[0], error, backoff)
                self._queued[key] = states + self._queued.get(key, [])
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued report is sent (or `timeout`); True when nothing is left."""
        for event in self._wake.values():
            event.set()
        tasks = [task for task in self._senders.values() if not task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return not any(self._queued.values())

    async def send_now(self, target_id: int, action: str, states: list[dict], current_sha256: str = "") -> bool:
        """One report sent synchronously (the self-upgrade confirmation); True when the server took it."""
        body = {"target_id": int(target_id), "action": action, "states": states, "current_sha256": current_sha256}
        try:
            response = await self.api.post("/payloads/agent/report", json=body)
        except httpx.HTTPError as error:
            logger.warning("deploy report for target %s failed: %s", target_id, error)
            return False
        return response.status_code in (204, 200, 404)

    async def close(self) -> None:
        await self.flush(timeout=5)
        for task in self._senders.values():
            task.cancel()
