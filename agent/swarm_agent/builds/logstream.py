"""Streams a build's log to the control plane with GitLab Runner's trace protocol.

Every byte goes to a local spool file first, so any range can be sent again.
`PATCH /builds/<id>/log` carries `Content-Range: <start>-<end>` (inclusive)
and at most `max_patch_bytes`; the server answers 202 with `Range: 0-<size>`.
A 416 carries the server's `Range`: the streamer resumes from that offset
(sending again what the server lost, skipping what it already has), so the
final log has no byte lost or doubled. The final report carries the size and
sha256 of the spool, which the server compares with what it stored.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

RANGE = re.compile(r"^\s*(?:bytes\s+)?0-(\d+)\s*$")


class LogRejected(Exception):
    """The server refused the log for good (build gone, archived, too large)."""


def parse_range(header: str | None) -> int | None:
    """The size a `Range: 0-<size>` header announces."""
    match = RANGE.match(header or "")
    return int(match.group(1)) if match else None


class LogStreamer:
    """Appends to a spool file and ships it in order, resuming after a 416."""

    def __init__(self, api: httpx.AsyncClient, build_id: int, spool_path: Path, *, attempt: int | None = None,
                 start_offset: int = 0, max_patch_bytes: int = 1024 * 1024, flush_interval: float = 0.2,
                 on_job_status: Callable[[str], None] | None = None):
        self.api = api
        self.build_id = build_id
        self.attempt = attempt
        self.spool_path = Path(spool_path)
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        self._spool = open(self.spool_path, "w+b")  # noqa: SIM115 - closed in close()
        self.written = 0
        # Bytes the server confirmed (its Range). `start_offset` lets a resumed attempt skip what it holds.
        self.acknowledged = start_offset
        self.max_patch_bytes = max_patch_bytes
        self.flush_interval = flush_interval
        self.on_job_status = on_job_status
        self.patches = 0
        self.resumes = 0
        self._digest = hashlib.sha256()
        self._lock = asyncio.Lock()
        self._data_ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self.failed: Exception | None = None

    # --- writing ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Add bytes to the log (already masked)."""
        if not data:
            return
        self._spool.seek(0, 2)
        self._spool.write(data)
        self._digest.update(data)
        self.written += len(data)
        self._data_ready.set()

    def line(self, text: str) -> None:
        """Add one line of agent commentary."""
        self.write((text.rstrip("\n") + "\n").encode())

    @property
    def checksum(self) -> str:
        """`sha256:<hex>` of everything written."""
        return f"sha256:{self._digest.hexdigest()}"

    # --- shipping -----------------------------------------------------------------

    def start(self) -> None:
        """Ship in the background until `close()`."""
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._closed:
            try:
                await asyncio.wait_for(self._data_ready.wait(), timeout=self.flush_interval * 5)
            except asyncio.TimeoutError:
                pass
            self._data_ready.clear()
            try:
                await self.flush()
            except LogRejected as error:
                self.failed = error
                return
            except httpx.HTTPError as error:
                logger.warning("log upload of build %s failed (%s); retrying", self.build_id, error)
            await asyncio.sleep(self.flush_interval)

    def _read_spool(self, start: int, length: int) -> bytes:
        self._spool.flush()
        self._spool.seek(start)
        data = self._spool.read(length)
        self._spool.seek(0, 2)
        return data

    async def flush(self) -> None:
        """Send everything not yet acknowledged, in pieces, following the server's Range."""
        async with self._lock:
            stalls = 0
            while self.acknowledged < self.written:
                start = self.acknowledged
                data = self._read_spool(start, min(self.max_patch_bytes, self.written - start))
                headers = {"Content-Range": f"{start}-{start + len(data) - 1}", "Content-Type": "text/plain"}
                if self.attempt is not None:
                    headers["Build-Attempt"] = str(self.attempt)
                response = await self.api.patch(f"/builds/{self.build_id}/log", content=data, headers=headers)
                self._job_status(response)
                self.patches += 1
                if response.status_code == 202:
                    size = parse_range(response.headers.get("Range"))
                    self.acknowledged = size if size is not None else start + len(data)
                    stalls = 0
                    continue
                if response.status_code == 416:
                    size = parse_range(response.headers.get("Range"))
                    if size is None or size > self.written:
                        raise LogRejected(f"the server holds {size} log bytes, more than the {self.written} written")
                    logger.info("build %s log: server has %s bytes, resuming there (we were at %s)",
                                self.build_id, size, start)
                    self.resumes += 1
                    self.acknowledged = size
                    stalls += 1
                    if stalls > 5:
                        raise LogRejected("the server keeps refusing the log offset")
                    continue
                if response.status_code in (404, 409, 413):
                    raise LogRejected(f"log refused: {response.status_code} {response.text[:200]}")
                response.raise_for_status()

    def _job_status(self, response: httpx.Response) -> None:
        status = response.headers.get("Job-Status")
        if status and self.on_job_status is not None:
            self.on_job_status(status)

    async def close(self) -> None:
        """Stop the background shipper after a last flush."""
        self._closed = True
        self._data_ready.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for attempt in range(10):
            try:
                await self.flush()
                break
            except LogRejected as error:
                self.failed = error
                break
            except httpx.HTTPError as error:
                logger.warning("final log flush failed (%s), attempt %s", error, attempt + 1)
                await asyncio.sleep(min(2 ** attempt * 0.2, 5))

    def discard(self) -> None:
        """Close and remove the spool file."""
        try:
            self._spool.close()
        finally:
            self.spool_path.unlink(missing_ok=True)
