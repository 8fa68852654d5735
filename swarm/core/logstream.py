"""The control plane's own logs: structured JSON lines, and one capped Redis stream every process appends to.

Every process (web replicas, Celery workers, beat, management commands)
logs through Django's LOGGING (swarm/settings.py) to two handlers:

* stdout, one JSON object per line (`JsonFormatter`; `SWARM_LOG_FORMAT=plain`
  for the old human format);
* `RedisStreamHandler`: the same record appended to one Redis stream
  (`XADD … MAXLEN ~ SWARM_LOG_STREAM_MAXLEN`), so the admin's log page
  (`/admin/logs/`, swarm.core.consumers.ControlPlaneLogConsumer) tails and
  filters every replica's lines in one place.

A Redis outage must never block or crash the code that logs: `emit()` only
puts the record on a bounded in-memory queue (dropping it, and counting the
drop, when the queue is full) and a daemon thread does the XADDs in
pipelines with short timeouts. While Redis is away the thread drops what
queued up, says so once on stderr, and tries again with a growing pause;
stdout logging goes on untouched.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
#: Records waiting for the sender thread; more are dropped (and counted), never waited for.
QUEUE_LIMIT = 10_000
#: Records sent per pipeline.
BATCH_LIMIT = 500
#: Seconds the sender waits for Redis on connect and on each call.
REDIS_TIMEOUT = 1.0
RETRY_INITIAL, RETRY_MAX = 1.0, 30.0


def process_role(argv: list[str] | None = None) -> str:
    """What this process is in the installation: web, worker, beat, `manage <command>`, or its program name."""
    explicit = os.environ.get("SWARM_PROCESS_ROLE")
    if explicit:
        return explicit
    argv = list(argv if argv is not None else sys.argv)
    # `python -m uvicorn` has .../uvicorn/__main__.py as argv[0]: the package names the program.
    words = [os.path.basename(os.path.dirname(word)) if word.endswith("__main__.py") else os.path.basename(word)
             for word in argv]
    if any(word.startswith("uvicorn") for word in words):
        return "web"
    if any(word.startswith("celery") for word in words):
        if "beat" in words:
            return "beat"
        if "worker" in words:
            return "worker"
        return "celery"
    if words and words[0] == "manage.py" and len(words) > 1:
        return f"manage {words[1]}"
    if any(word in ("pytest", "py.test") or word.startswith("pytest") for word in words):
        return "test"
    return words[0] if words else "python"


def process_label() -> str:
    """`<role>@<host>:<pid>`: which replica or worker wrote a line."""
    return f"{process_role()}@{socket.gethostname()}:{os.getpid()}"


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict:
    """The structured fields of one log record (shared by stdout and the stream)."""
    fields = {
        "ts": round(record.created, 6),
        "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "process": process_label(),
        "message": record.getMessage(),
    }
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        fields["exc"] = record.exc_text
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, time, level, logger, process, message (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record, self), ensure_ascii=False, default=str)


def stream_key() -> str:
    """The Redis key of the stream (under the installation's cache prefix)."""
    from django.conf import settings

    return f"{settings.CACHES['default'].get('KEY_PREFIX') or 'swarm'}:logs"


def stream_redis_url() -> str:
    from django.conf import settings

    return settings.SWARM_LOG_REDIS_URL


class RedisStreamHandler(logging.Handler):
    """Appends records to the capped Redis stream from a background thread; see the module docstring."""

    def __init__(self, level=logging.NOTSET, maxlen: int | None = None):
        super().__init__(level)
        self.maxlen = maxlen
        self.dropped = 0
        self._formatter = logging.Formatter()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.Queue = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._pid != os.getpid():  # forked (Celery's prefork pool): a fresh queue and thread of our own
                self._reset()
            if self._thread is not None and threading.get_ident() == self._thread.ident:
                return  # the sender's own records (redis-py's) would feed themselves
            fields = record_fields(record, self._formatter)
            try:
                self._queue.put_nowait(fields)
            except queue.Full:
                self.dropped += 1
                return
            if self._thread is None:
                self._start()
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._send_forever, name="swarm-log-stream", daemon=True)
                self._thread.start()
                atexit.register(self.flush_pending, 1.0)

    def _client(self):
        import redis

        return redis.Redis.from_url(stream_redis_url(), socket_timeout=REDIS_TIMEOUT,
                                    socket_connect_timeout=REDIS_TIMEOUT, health_check_interval=0)

    def _batch(self, wait: float | None) -> list[dict]:
        try:
            batch = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while len(batch) < BATCH_LIMIT:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _send(self, client, key: str, batch: list[dict]) -> None:
        from django.conf import settings

        maxlen = self.maxlen or settings.SWARM_LOG_STREAM_MAXLEN
        with client.pipeline(transaction=False) as pipeline:
            for fields in batch:
                pipeline.xadd(key, {"j": json.dumps(fields, ensure_ascii=False, default=str)}, maxlen=maxlen,
                              approximate=True)
            pipeline.execute()

    def _send_forever(self) -> None:
        client, key, pause, outage = None, None, RETRY_INITIAL, False
        while True:
            batch = self._batch(wait=None)
            try:
                if client is None:
                    client, key = self._client(), stream_key()
                self._send(client, key, batch)
                if outage:
                    sys.stderr.write("swarm log stream: Redis is back; lines go to the stream again\n")
                outage, pause = False, RETRY_INITIAL
            except Exception as error:  # noqa: BLE001 - Redis away: drop and retry later, never raise
                self.dropped += len(batch)
                if not outage:
                    sys.stderr.write(f"swarm log stream unavailable ({type(error).__name__}: {error}); "
                                     "lines go to stdout only until it is back\n")
                outage, client = True, None
                time.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)
                while self._batch(wait=0):  # what queued meanwhile is dropped, not replayed late
                    self.dropped += 1

    def flush_pending(self, timeout: float = 1.0) -> None:
        """Wait (up to `timeout` s) for the queue to empty: at exit, and in tests."""
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)


# --- reading the stream (the admin's log page) ------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    """What the operator asked to see: process and logger substrings, a minimum level, a text substring."""

    process: str = ""
    level: str = ""
    logger: str = ""
    text: str = ""

    @classmethod
    def from_message(cls, message: dict) -> LogFilter:
        def field(name: str) -> str:
            value = message.get(name, "")
            return value.strip()[:200] if isinstance(value, str) else ""

        level = field("level").upper()
        return cls(process=field("process"), level=level if level in LEVELS else "", logger=field("logger"),
                   text=field("text"))

    def matches(self, line: dict) -> bool:
        if self.level and LEVELS.get(str(line.get("level")), 0) < LEVELS[self.level]:
            return False
        if self.process and self.process.lower() not in str(line.get("process", "")).lower():
            return False
        if self.logger and not str(line.get("logger", "")).startswith(self.logger):
            return False
        if self.text:
            haystack = f"{line.get('message', '')}\n{line.get('exc', '')}".lower()
            if self.text.lower() not in haystack:
                return False
        return True


#: Lines of history looked at when a filter is (re)applied, and at most sent of them.
BACKLOG_SCAN, BACKLOG_SEND = 5000, 300
#: Seconds a read blocks waiting for new lines; seconds between tries while Redis is away.
BLOCK_SECONDS, RETRY_SECONDS = 5, 3


def _decode(entry) -> dict | None:
    entry_id, fields = entry
    raw = fields.get(b"j") or fields.get("j")
    try:
        line = json.loads(raw)
    except (TypeError, ValueError):
        return None
    line["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return line


async def tail(log_filter: LogFilter):
    """Yield messages for the log page: `backlog` (recent matching lines), then `lines` as they come.

    While the stream's Redis cannot be reached it yields `unavailable` with
    the reason and tries again every RETRY_SECONDS; once back, a fresh
    backlog follows.
    """
    import redis.asyncio as redis_asyncio
    from redis.exceptions import RedisError

    key = stream_key()
    client = redis_asyncio.Redis.from_url(stream_redis_url(), socket_timeout=BLOCK_SECONDS + 5,
                                          socket_connect_timeout=2)
    last_id = None
    try:
        while True:
            try:
                if last_id is None:
                    entries = await client.xrevrange(key, count=BACKLOG_SCAN)
                    lines = [line for line in map(_decode, reversed(entries)) if line and log_filter.matches(line)]
                    last_id = entries[0][0] if entries else "0-0"
                    yield {"type": "backlog", "lines": lines[-BACKLOG_SEND:], "key": key}
                    continue
                answer = await client.xread({key: last_id}, block=BLOCK_SECONDS * 1000, count=BATCH_LIMIT)
                for _, entries in answer or []:
                    if entries:
                        last_id = entries[-1][0]
                    lines = [line for line in map(_decode, entries) if line and log_filter.matches(line)]
                    if lines:
                        yield {"type": "lines", "lines": lines}
            except (RedisError, OSError, asyncio.TimeoutError) as error:
                yield {"type": "unavailable",
                       "detail": f"the log stream's Redis cannot be reached ({type(error).__name__}: {error}); "
                                 f"processes keep logging to their stdout. Retrying every {RETRY_SECONDS} s."}
                last_id = None
                await asyncio.sleep(RETRY_SECONDS)
    finally:
        await client.aclose()
