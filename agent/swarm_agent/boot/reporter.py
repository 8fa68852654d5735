"""Report boot events and output lines to the control plane, batched, in order.

One background thread drains a queue and POSTs batches to the metadata
events endpoint with the execution token. Output lines are batched (up to
`BATCH_LINES` per request, `BATCH_SECONDS` of lingering); stage events go out
in the same ordered stream. A 401/409 answer means the execution has ended
(cancelled, timed out) and sets `ended`, which the runner treats as "stop".
Without a control plane (BUNDLE_URL mode) events are printed as JSON lines.

The control plane may be restarting while the boot runs (its processes can
all be replaced mid-execution): a batch that cannot be delivered is retried,
with a backoff capped at `RETRY_MAX_DELAY`, for up to `SWARM_REPORT_RETRY_SECONDS`
(default 900 s) before it is given up. Each batch carries `first`, the index of
its first event among everything this boot reported, so a batch whose answer
was lost (the server stored it, then died) is not stored twice when it is sent
again.

Every string sent is first made storable (`storable_text`): the control plane
refuses a NUL or a lone UTF-16 surrogate anywhere in a JSON body (400
`invalid_text`, since PostgreSQL can store neither), which would lose the
whole batch. An entrypoint that prints a NUL byte, or a file name decoded
with surrogate escapes, is reported with U+FFFD in that place instead.
"""
from __future__ import annotations

import json
import os
import queue
import re
import sys
import threading
import time

from swarm_agent.boot.http import HttpFailure, request_json

BATCH_LINES = 500
BATCH_SECONDS = 0.2
RETRY_SECONDS = float(os.environ.get("SWARM_REPORT_RETRY_SECONDS", "900"))
RETRY_MAX_DELAY = 2.0
_STOP = object()
#: What no text column can store: NUL and lone surrogates (the server refuses them; swarm/core/inputs.py).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT_CHARACTER = "\ufffd"


def storable_text(text: str) -> str:
    """`text` with each NUL and lone surrogate replaced by U+FFFD, so the control plane stores it."""
    return _UNSTORABLE.sub(REPLACEMENT_CHARACTER, text)


def storable(value):
    """A JSON value with every string in it (keys too) made storable."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(key)): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


class EventReporter:
    """Ordered, batched event delivery to `events_url` (or to stderr when it is None)."""

    def __init__(self, events_url: str | None, token: str | None, *, echo_output: bool = False):
        self.events_url = events_url
        self.ended = threading.Event()
        self.echo_output = echo_output or events_url is None
        self._queue: queue.Queue = queue.Queue()
        self._headers = {"X-Swarm-Metadata-Token": token or ""}
        self._reported = 0
        self._thread = threading.Thread(target=self._run, name="event-reporter", daemon=True)
        self._thread.start()

    def event(self, event_type: str, message: str = "", data: dict | None = None) -> None:
        """Queue a stage event."""
        message = storable_text(message)
        self._queue.put({"type": event_type, "message": message, "data": storable(data or {})})
        if self.events_url is not None:
            print(f"[swarm-agent boot] {event_type}: {message}", file=sys.stderr, flush=True)

    def output(self, stream: str, line: str) -> None:
        """Queue one output line of the entrypoint (a NUL in it is sent as U+FFFD)."""
        line = storable_text(line)
        self._queue.put({"type": "output", "stream": stream, "message": line})
        if self.echo_output:
            print(line, file=sys.stdout if stream == "stdout" else sys.stderr, flush=True)

    def flush(self) -> None:
        """Block until everything queued so far was delivered (or given up on)."""
        self._queue.join()

    def close(self) -> None:
        """Deliver what is queued and stop the sender."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._queue.task_done()
                return
            batch = [first]
            stop = False
            deadline = time.monotonic() + (BATCH_SECONDS if first.get("type") == "output" else 0)
            while len(batch) < BATCH_LINES:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                self._send(batch)
            finally:
                for _ in range(len(batch) + (1 if stop else 0)):
                    self._queue.task_done()
            if stop:
                return

    def _send(self, batch: list[dict]) -> None:
        if self.events_url is None:
            for item in batch:
                if item["type"] != "output":
                    print(json.dumps(item), file=sys.stderr, flush=True)
            return
        if self.ended.is_set():
            return
        first, self._reported = self._reported, self._reported + len(batch)
        give_up = time.monotonic() + RETRY_SECONDS
        delay = 0.1
        while True:
            try:
                status, text = request_json("POST", self.events_url, headers=self._headers,
                                            payload={"events": batch, "first": first})
            except HttpFailure as exc:
                status, text = None, str(exc)
            if status in (401, 403, 404, 409):
                # The execution ended (cancelled / timed out) and its token died with it.
                self.ended.set()
                return
            if status is not None and status < 500:
                if status >= 400:
                    print(f"[swarm-agent boot] the control plane refused events: {text[:300]}",
                          file=sys.stderr, flush=True)
                return
            if time.monotonic() > give_up:
                print(f"[swarm-agent boot] gave up reporting {len(batch)} events: {text[:300]}", file=sys.stderr,
                      flush=True)
                return
            print(f"[swarm-agent boot] reporting failed ({status or text}); retrying", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
