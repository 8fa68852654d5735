"""A lean HTTP/1.1 keep-alive load generator for the benchmarks (asyncio streams, uvloop when present).

The benchmarks measure the server, so the client must cost as little CPU per
request as it can on the same two cores: requests are pre-rendered bytes
written to persistent connections, and a response is read as a status line,
headers up to the blank line and a `Content-Length` body. That is all of
HTTP/1.1 the Swarm server speaks to these clients (uvicorn never chunks a
response with a known length), and anything else is counted as an error.

    requests = [render("POST", "/api/v1/drones/heartbeat", body, {"Authorization": ...}), ...]
    result = asyncio.run(closed_loop("127.0.0.1", port, requests, concurrency=64, duration=10))
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def render(method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
           host: str = "127.0.0.1") -> bytes:
    """One complete HTTP/1.1 request as bytes (a dict body is sent as JSON)."""
    if isinstance(body, dict):
        body = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Connection:
    """One keep-alive connection; `request()` sends bytes and reads one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        return cls(reader, writer)

    async def request(self, data: bytes) -> Response:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        body = await self.reader.readexactly(length) if length else b""
        return Response(status, headers, body)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Tally:
    """Latencies of the good answers and the kinds of the bad ones."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    def summary(self, elapsed: float) -> dict:
        ordered = sorted(self.latencies)

        def percentile(fraction: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 2)

        return {"requests": len(ordered), "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
                "per_second": round(len(ordered) / elapsed, 1) if elapsed else 0.0,
                "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
                "mean_ms": round(statistics.fmean(ordered) * 1000, 2) if ordered else None,
                "seconds": round(elapsed, 2)}


Check = Callable[[Response], bool]


def _ok(response: Response) -> bool:
    return 200 <= response.status < 300


async def _one(connection: Connection, data: bytes, tally: Tally, check: Check, since: float | None = None) -> bool:
    """Send one request, timed from `since` (default: now); False when the connection is no longer usable."""
    started = time.perf_counter() if since is None else since
    try:
        response = await connection.request(data)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
        tally.errors[type(error).__name__] += 1
        return False
    if check(response):
        tally.latencies.append(time.perf_counter() - started)
    else:
        tally.errors[f"http_{response.status}"] += 1
    return response.headers.get(b"connection", b"").lower() != b"close"


async def closed_loop(host: str, port: int, requests: Sequence[bytes], *, concurrency: int, duration: float,
                      check: Check = _ok, once: bool = False) -> dict:
    """`concurrency` connections, each sending its next request as soon as the last is answered.

    Runs for `duration` seconds, or with `once` until every request was sent once.
    """
    tally = Tally()
    deadline = time.perf_counter() + duration

    async def worker(index: int) -> None:
        connection = await Connection.open(host, port)
        sequence = index
        try:
            while time.perf_counter() < deadline and not (once and sequence >= len(requests)):
                data = requests[sequence % len(requests)]
                sequence += concurrency
                if not await _one(connection, data, tally, check):
                    connection.close()
                    connection = await Connection.open(host, port)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return tally.summary(time.perf_counter() - started)


async def paced(host: str, port: int, requests: Sequence[bytes], *, rate: float, duration: float,
                connections: int = 128, check: Check = _ok) -> dict:
    """Open loop: requests at `rate` per second, whatever the latency, over a pool of connections.

    A request that finds every connection busy waits for one (its wait counts
    in its latency); more than one second's worth waiting means the server is
    not keeping up, and those are counted as `not_sent_server_saturated`.
    """
    tally = Tally()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(host, port))
    in_flight: set[asyncio.Task] = set()
    skipped = 0

    async def one(data: bytes, due: float) -> None:
        connection = await idle.get()
        # Latency counts from when the request was due, so waiting for a connection is included.
        usable = await _one(connection, data, tally, check, since=due)
        if not usable:
            connection.close()
            connection = await Connection.open(host, port)
        idle.put_nowait(connection)

    start = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - start < duration:
        due_count = int((now - start) * rate) - sent - skipped
        for _ in range(max(0, due_count)):
            if len(in_flight) >= max(connections, int(rate)):
                skipped += 1
                continue
            task = asyncio.ensure_future(one(requests[sent % len(requests)], start + (sent + skipped) / rate))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
        await asyncio.sleep(0.001)
    if in_flight:
        await asyncio.wait(set(in_flight))
    elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().close()
    result = tally.summary(elapsed)
    result.update({"offered_per_second": rate, "not_sent_server_saturated": skipped})
    return result


def run(coroutine):
    """asyncio.run on uvloop when it is installed (it is, with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
