"""An ASGI handler that streams large request bodies into the view instead of spooling them first.

Django's `ASGIHandler` reads the whole body into a SpooledTemporaryFile before
the view runs. For a 1 GiB bundle that means the bytes are written to a local
disk, then read back and sent to S3 only after the client has finished: two
sequential phases, an extra GiB of disk I/O, and no chance of overlapping the
network receive with the upload to storage.

For the few routes listed in `streaming_routes` (bundle uploads), this handler
hands the view a file-like body that reads the ASGI `receive()` messages as
they arrive. A bounded queue between the event loop and the view's thread is
the back-pressure: when the view (hashing, inspecting, uploading parts) falls
behind, the server stops reading the socket, so memory stays flat. Every other
request goes through Django's handler unchanged.

The client's going away is reported to the view: a disconnect mid-body makes
`read()` raise, and one after the body (while the view still checks and
registers the upload) sets the `threading.Event` at
`request.META[CLIENT_GONE_META_KEY]`, which the upload path checks before it
registers anything.
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterable

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpResponse
from django.urls import set_script_prefix

logger = logging.getLogger(__name__)

#: Bytes handed from the event loop to the view per queue item, and how many items may wait.
STREAM_CHUNK = 1024 * 1024
STREAM_QUEUE_DEPTH = 2
#: Unread body (e.g. after an early 401/413) drained before answering, so the client sees the answer.
MAX_DRAIN_BYTES = 16 * 1024 * 1024

_END = object()
#: request.META key of a threading.Event set once the client has disconnected.
CLIENT_GONE_META_KEY = "swarm.client_gone"


class ClientDisconnected(OSError):
    """The client went away before sending the whole body."""


class StreamingRequestBody:
    """A read-only, file-like request body fed by an ASGI `receive` callable.

    `pump()` runs on the event loop and moves body bytes (coalesced to about
    `STREAM_CHUNK`) into a bounded queue; `read()` runs on the view's thread
    and takes them out.
    """

    def __init__(self, receive, loop: asyncio.AbstractEventLoop):
        self._receive = receive
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=STREAM_QUEUE_DEPTH)
        self._chunk = b""
        self._buffer = memoryview(b"")
        self._finished = False
        self.disconnected = False
        self.body_complete = False
        self.client_gone = threading.Event()

    async def pump(self) -> None:
        """Read body messages until the end of the body (or a disconnect)."""
        pending: list[bytes] = []
        pending_size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.client_gone.set()
                break
            chunk = message.get("body", b"")
            if chunk:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= STREAM_CHUNK:
                    await self._queue.put(b"".join(pending))  # one copy per MiB, not one per message
                    pending, pending_size = [], 0
            if not message.get("more_body", False):
                self.body_complete = True
                break
        if pending and not self.disconnected:
            await self._queue.put(b"".join(pending))
        await self._queue.put(_END)
        if self.body_complete:
            await self.watch_for_disconnect()

    async def watch_for_disconnect(self) -> None:
        """After the body: wait for the client to go away (cancelled once the answer is being sent)."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.client_gone.set()
                return

    def _next_chunk(self):
        return asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result()

    def _fill(self) -> bool:
        """Make sure some unread bytes are buffered; False at the end of the body."""
        if self._buffer:
            return True
        if self._finished:
            return False
        chunk = self._next_chunk()
        if chunk is _END:
            self._finished = True
            if self.disconnected:
                raise ClientDisconnected("the client disconnected before sending the whole body")
            return False
        self._chunk = chunk
        self._buffer = memoryview(chunk)
        return True

    def _take(self, count: int) -> bytes:
        if count == len(self._buffer) == len(self._chunk):
            taken = self._chunk  # a whole chunk: hand over the bytes object itself, no copy
        else:
            taken = bytes(self._buffer[:count])
        self._buffer = self._buffer[count:]
        return taken

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all remaining bytes when negative); b"" at the end of the body."""
        parts = []
        wanted = size if size is not None and size >= 0 else None
        while (wanted is None or wanted > 0) and self._fill():
            part = self._take(len(self._buffer) if wanted is None else min(wanted, len(self._buffer)))
            parts.append(part)
            if wanted is not None:
                wanted -= len(part)
        return b"".join(parts)

    def readline(self, size: int = -1) -> bytes:
        """Bytes up to and including the next newline (Django exhausts bodies line by line)."""
        parts = []
        wanted = size if size is not None and size >= 0 else None
        while (wanted is None or wanted > 0) and self._fill():
            limit = len(self._buffer) if wanted is None else min(wanted, len(self._buffer))
            newline = bytes(self._buffer[:limit]).find(b"\n")
            part = self._take(limit if newline < 0 else newline + 1)
            parts.append(part)
            if wanted is not None:
                wanted -= len(part)
            if newline >= 0:
                break
        return b"".join(parts)

    def __iter__(self):
        return iter(self.readline, b"")

    async def drain(self, limit: int) -> bool:
        """Discard what the view left unread, up to `limit` bytes; True when the body ended."""
        drained = 0
        while not self._finished:
            chunk = await self._queue.get()
            if chunk is _END:
                self._finished = True
                break
            drained += len(chunk)
            if drained > limit:
                return False
        return self.body_complete

    def close(self) -> None:
        self._buffer = memoryview(b"")


class StreamingBodyASGIHandler(ASGIHandler):
    """Django's ASGI handler, with streamed request bodies for the given (method, path regex) routes."""

    def __init__(self, streaming_routes: Iterable[tuple[str, str]] = ()):
        super().__init__()
        self.streaming_routes = [(method.upper(), re.compile(pattern)) for method, pattern in streaming_routes]

    def streams_body(self, scope) -> bool:
        """Whether this request's body goes to the view as a stream."""
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        method = scope.get("method", "").upper()
        return any(method == wanted and pattern.match(path) for wanted, pattern in self.streaming_routes)

    async def handle(self, scope, receive, send):
        if not self.streams_body(scope):
            return await super().handle(scope, receive, send)
        body = StreamingRequestBody(receive, asyncio.get_running_loop())
        pump = asyncio.create_task(body.pump())
        try:
            set_script_prefix(get_script_prefix(scope))
            await signals.request_started.asend(sender=self.__class__, scope=scope)
            request, error_response = self.create_request(scope, body)
            if request is not None:
                request.META[CLIENT_GONE_META_KEY] = body.client_gone
            response = error_response if request is None else await self.run_get_response(request)
            complete = await body.drain(MAX_DRAIN_BYTES)
            if not pump.done():
                pump.cancel()  # it is only watching for a disconnect now; the server notices one from here on
            if body.disconnected or body.client_gone.is_set():
                await sync_to_async(response.close)()
                return
            if not complete:
                # Too much left unread to swallow: answer, and let the server drop the connection.
                response["Connection"] = "close"
            await self.send_response(response, send)
            await sync_to_async(response.close)()
        except Exception:  # noqa: BLE001 - last resort, like Django's handler
            logger.exception("streaming request to %s failed", scope.get("path"))
            await self.send_response(HttpResponse("Internal Server Error", status=500), send)
        finally:
            body.close()
            if not pump.done():
                pump.cancel()
                try:
                    await pump
                except asyncio.CancelledError:
                    pass
