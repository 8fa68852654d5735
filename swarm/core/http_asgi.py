"""HTTP for the ASGI server: Django's WSGI handler on a fixed pool of threads.

Under `django.core.asgi`, every request runs inside asgiref's
`ThreadSensitiveContext`, which starts a fresh thread for the request's sync
code (middleware that is not async-capable, DRF's views) and joins it at the
end, and hops between that thread and the event loop once per middleware
layer. For a control plane whose views are synchronous (DRF) that costs more
than the views themselves: a trivial JSON endpoint served about 250 requests
per second per process that way, and about 1,100 through the WSGI handler on
a pool of long-lived threads (measured with `bench/heartbeats.py`).

So HTTP requests go to Django's WSGIHandler, run by a2wsgi on
`SWARM_HTTP_THREADS` threads per server process, with request bodies streamed
from the socket (a2wsgi feeds `wsgi.input` from ASGI `receive`) and
responses sent as they are produced. Files (FileResponse) are streamed in
1 MiB blocks through `wsgi.file_wrapper`. The routes listed as streaming
(bundle uploads, see swarm/core/streaming_asgi.py) keep their ASGI handler;
WebSockets stay with Channels.
"""
from __future__ import annotations

from collections.abc import Iterable

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

from swarm.core.event_loop import remember_server_loop
from swarm.core.fast_routes import FastRoute, FastRoutes
from swarm.core.streaming_asgi import StreamingBodyASGIHandler

#: Block size for files streamed in responses (Django's FileResponse default is 4 KiB).
FILE_BLOCK_SIZE = 1024 * 1024


class FileWrapper:
    """PEP 3333 `wsgi.file_wrapper`: iterate a file in large blocks and close it at the end."""

    def __init__(self, filelike, block_size: int = FILE_BLOCK_SIZE):
        self.filelike = filelike
        self.block_size = max(int(block_size or 0), FILE_BLOCK_SIZE)

    def __iter__(self):
        while True:
            block = self.filelike.read(self.block_size)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class DjangoWSGIHandler(WSGIHandler):
    """Django's WSGI handler with a large-block `wsgi.file_wrapper`."""

    def __call__(self, environ, start_response):
        environ.setdefault("wsgi.file_wrapper", FileWrapper)
        return super().__call__(environ, start_response)


class DjangoHTTPApp:
    """The ASGI `http` application.

    Fast routes are answered on the event loop when they can be (else Django
    answers them); streaming routes go to Django's ASGI handler; the rest to
    Django's WSGI handler on threads.
    """

    def __init__(self, *, streaming_routes: Iterable[tuple[str, str]] = (), fast_routes: Iterable[FastRoute] = (),
                 threads: int | None = None):
        self.streaming = StreamingBodyASGIHandler(streaming_routes=streaming_routes)
        self.threads = threads or settings.SWARM_HTTP_THREADS
        self.wsgi = WSGIMiddleware(DjangoWSGIHandler(), workers=self.threads)
        self.fast = FastRoutes(list(fast_routes), fallback=self.django)

    async def django(self, scope, receive, send):
        if scope["type"] == "http" and not self.streaming.streams_body(scope):
            return await self.wsgi(scope, receive, send)
        return await self.streaming(scope, receive, send)

    async def __call__(self, scope, receive, send):
        remember_server_loop()
        return await self.fast(scope, receive, send)
