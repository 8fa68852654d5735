"""Stream a bundle from a URL to a file, hashing while writing, in one pass.

Uses the standard library's `http.client` with large `readinto()` chunks into
a small pool of reused buffers (no per-chunk allocation), receiving, hashing
and writing on three threads (hashlib and os.write release the GIL), so a
fetch runs close to the speed of `curl` (see bench/boot.py).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import queue
import threading
import time
import urllib.parse
from dataclasses import dataclass

from swarm_agent.boot.http import HttpFailure, connection_for

CHUNK_BYTES = 1024 * 1024
BUFFERS = 16
MAX_REDIRECTS = 5
USER_AGENT = "swarm-agent-boot"


class FetchError(Exception):
    """The bundle could not be downloaded."""


@dataclass(frozen=True)
class FetchResult:
    """What a download produced: the digest of the bytes written, their count and the time taken."""

    sha256: str
    size: int
    seconds: float


def fetch_to_file(url: str, destination, *, timeout: float = 60.0, max_bytes: int | None = None) -> FetchResult:
    """GET `url` into the open binary file `destination`; returns the sha256 of what was written.

    The digest is computed here from the bytes received — a server-sent
    checksum header is never trusted.
    """
    started = time.monotonic()
    for _ in range(MAX_REDIRECTS + 1):
        try:
            connection, target = connection_for(url, timeout)
        except HttpFailure as exc:
            raise FetchError(str(exc)) from exc
        try:
            connection.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                response.read()
                continue
            if response.status != 200:
                body = response.read(300).decode(errors="replace")
                raise FetchError(f"GET bundle returned HTTP {response.status}: {body}")
            return _stream(response, destination, started, max_bytes)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"downloading the bundle failed: {exc}") from exc
        finally:
            connection.close()
    raise FetchError("too many redirects")


def _stream(response, destination, started: float, max_bytes: int | None) -> FetchResult:
    """Receive, hash and write on three threads: the network never waits on the hash or the disk.

    A buffer goes receiver → this thread (hashes it) → writer → back to the
    free pool, so while one buffer is being written the next is hashed and a
    third received. A fixed pool of `BUFFERS` buffers bounds memory
    (BUFFERS × CHUNK_BYTES) whatever the bundle size.
    """
    free: queue.Queue = queue.Queue()
    filled: queue.Queue = queue.Queue()
    to_write: queue.Queue = queue.Queue()
    for _ in range(BUFFERS):
        free.put(bytearray(CHUNK_BYTES))
    failure: list[BaseException] = []
    write_failure: list[BaseException] = []
    stop = threading.Event()

    def receive() -> None:
        try:
            while not stop.is_set():
                buffer = free.get()
                view = memoryview(buffer)
                count = 0
                # Fill the whole buffer (fewer, larger writes and hash updates).
                while count < CHUNK_BYTES:
                    received = response.readinto(view[count:])
                    if not received:
                        break
                    count += received
                filled.put((buffer, count))
                if count < CHUNK_BYTES:
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised on the consuming thread
            failure.append(exc)
            filled.put((None, 0))

    fd = destination.fileno()

    def write() -> None:
        while True:
            buffer, count = to_write.get()
            if buffer is None:
                return
            try:
                if not write_failure:
                    chunk = memoryview(buffer)[:count]
                    written = 0
                    while written < count:
                        written += os.write(fd, chunk[written:])
            except BaseException as exc:  # noqa: BLE001 - re-raised on the consuming thread
                write_failure.append(exc)
            finally:
                free.put(buffer)

    receiver = threading.Thread(target=receive, name="bundle-fetch", daemon=True)
    writer = threading.Thread(target=write, name="bundle-write", daemon=True)
    receiver.start()
    writer.start()
    digest = hashlib.sha256()
    size = 0
    try:
        while True:
            buffer, count = filled.get()
            if buffer is None:
                raise failure[0]
            if write_failure:
                raise write_failure[0]
            if count:
                digest.update(memoryview(buffer)[:count])
                size += count
                to_write.put((buffer, count))
            else:
                free.put(buffer)
            if max_bytes is not None and size > max_bytes:
                raise FetchError(f"the bundle is larger than the limit of {max_bytes} bytes")
            if count < CHUNK_BYTES:
                break
    finally:
        stop.set()
        to_write.put((None, 0))
        writer.join()
        free.put(bytearray(0))  # unblock a receiver waiting for a buffer
        receiver.join(timeout=5)
    if write_failure:
        raise write_failure[0]
    expected = response.getheader("Content-Length")
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise FetchError(f"connection closed after {size} of {expected} bytes")
    return FetchResult(sha256=digest.hexdigest(), size=size, seconds=time.monotonic() - started)
