"""Run a coroutine from synchronous code, on the server's event loop when there is one.

Django's HTTP handling runs on a pool of threads (swarm/core/http_asgi.py).
`async_to_sync` called from such a thread has no loop to borrow, so it starts
a fresh event loop for every call — and channels-redis, whose connections
belong to a loop, opens a fresh Redis connection each time. A log append or a
claim that tells live viewers about itself would pay both on every request.
`run_async` hands the coroutine to the server's own loop instead (remembered
by the HTTP app on its first request), where the channel layer's connections
live on; outside a server (Celery, management commands, tests) it falls back
to `async_to_sync`.
"""
from __future__ import annotations

import asyncio
import os
import threading

from asgiref.sync import async_to_sync

#: Seconds a thread waits for its coroutine on the server loop.
TIMEOUT = 10.0

_server_loop: asyncio.AbstractEventLoop | None = None
_server_thread: int | None = None


def remember_server_loop() -> None:
    """Called on the server's event loop: sync code in other threads will run coroutines there."""
    global _server_loop, _server_thread
    loop = asyncio.get_running_loop()
    if _server_loop is not loop:
        _server_loop, _server_thread = loop, threading.get_ident()


def server_loop_for_other_threads() -> asyncio.AbstractEventLoop | None:
    """The server's running event loop when called from another thread (an HTTP worker), else None."""
    loop = _server_loop
    if loop is not None and loop.is_running() and threading.get_ident() != _server_thread:
        return loop
    return None


_background_enabled = False
_background: tuple[int, asyncio.AbstractEventLoop] | None = None
_background_lock = threading.Lock()


def use_background_loop() -> None:
    """In a process with no server loop (a Celery worker), run coroutines on one long-lived loop of its own.

    Without it every `run_async` (a deploy command to a drone, a notice to a
    live page) starts an event loop and a Redis connection of its own. The
    loop is started lazily, per process (a prefork child gets its own).
    """
    global _background_enabled
    _background_enabled = True


def background_loop() -> asyncio.AbstractEventLoop | None:
    """This process's own long-lived loop, when `use_background_loop()` was called; else None."""
    global _background
    if not _background_enabled:
        return None
    with _background_lock:
        if _background is None or _background[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="swarm-background-loop", daemon=True).start()
            _background = (os.getpid(), loop)
        return _background[1]


def run_async(function, *args, **kwargs):
    """`function(*args, **kwargs)` (a coroutine function) run to completion from sync code."""
    loop = server_loop_for_other_threads() or background_loop()
    if loop is not None:
        return asyncio.run_coroutine_threadsafe(function(*args, **kwargs), loop).result(TIMEOUT)
    return async_to_sync(function)(*args, **kwargs)
