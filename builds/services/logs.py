"""Build logs: appends from the agent (on Django's connection and on the event loop), reading, archiving.

A log is stored per attempt, first as chunks in PostgreSQL (one row per
append, at its byte offset), then — once the attempt is over — concatenated
into one blob (`attempt_archive_log`) and the chunks dropped. Readers
(`attempt_log_iter`) do not need to know which of the two they get.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from django.conf import settings
from django.core.files import File
from django.db import connection, transaction
from django.utils import timezone

from builds import events
from builds.agent_sql import BUILD_LOG_APPEND_SQL, LOG_APPEND_SQL, agent_params
from builds.choices import AttemptState
from builds.models import BuildAttempt, BuildLogChunk
from bundles.blobstore import BlobStore
from swarm.core import async_db
from swarm.core.errors import ApiError, Conflict, NotFound


class LogRangeMismatch(ApiError):
    """The agent's `Content-Range` does not start where the stored log ends (HTTP 416)."""

    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, log_size: int, detail: str):
        super().__init__(detail, headers={"Range": f"0-{log_size}"})
        self.log_size = log_size


@dataclass
class LogAppended:
    """The log's new size and the build's state after an append."""

    log_size: int
    build_state: str


def _log_append_answer(row, *, build_id: int, start: int, attempt_number: int | None) -> LogAppended:
    """What `swarm_build_log_append` answered, or the API's error for it (with the build's Job-Status)."""
    answer, number, size, state = row
    headers = {"Job-Status": state} if state else {}
    if answer in ("appended", "empty"):
        return LogAppended(log_size=size, build_state=state)
    if answer == "not_held":
        raise NotFound("No such build assigned to this drone.", headers=headers)
    if answer == "superseded":
        raise Conflict(f"Attempt {attempt_number} is over; the build is on attempt {number}.",
                       code="attempt_superseded", headers=headers)
    if answer == "archived":
        raise Conflict("This attempt's log is archived; nothing more can be appended.", code="log_archived",
                       headers=headers)
    if answer == "range":
        error = LogRangeMismatch(size, f"The log has {size} bytes; a patch must start there, not at {start}.")
        error.headers.update(headers)
        raise error
    if answer == "too_large":
        max_bytes = settings.SWARM_BUILD_LOG_MAX_BYTES
        raise ApiError(f"The log would exceed {max_bytes} bytes.", code="log_size_exceeded", status_code=413,
                       headers=headers)
    raise RuntimeError(f"swarm_build_log_append answered {answer!r} for build {build_id}")


async def build_log_append_async(*, token: str, build_id: int, start: int, data: bytes,
                                 attempt_number: int | None = None) -> LogAppended | None:
    """`build_log_append` for a drone token on the event loop's async connection; None when the view must answer.

    One round trip: `swarm_agent_log_append` (builds/sql/) checks the token,
    renews the drone's leases and runs the append `build_log_append` runs.
    Returns None — nothing was written — for a token that is no live drone
    token; raises the same errors as `build_log_append` for the rest.
    """
    params = agent_params(token, timezone.now())
    if params is None:
        return None
    params.update(build=build_id, start=start, data=data, attempt=attempt_number,
                  max_bytes=settings.SWARM_BUILD_LOG_MAX_BYTES)
    pool = await async_db.pool()
    async with pool.connection() as connection:
        cursor = await connection.execute(LOG_APPEND_SQL, params)
        row = await cursor.fetchone()
    if row[0] == "view":
        return None
    appended = _log_append_answer(row, build_id=build_id, start=start, attempt_number=attempt_number)
    if data:
        await events.emit_log_appended_async(build_id=build_id, attempt_number=row[1], log_size=appended.log_size)
    return appended


def build_log_append(*, build_id: int, drone, start: int, data: bytes, attempt_number: int | None = None) -> int:
    """Append `data` at byte `start` of the current attempt's log; returns the new log size.

    The start must equal the stored size (else `LogRangeMismatch` carrying the
    stored size, so the agent resumes there and nothing is lost or doubled).
    One call of `swarm_build_log_append` (builds/sql/), the append the event
    loop runs too.
    """
    with transaction.atomic():
        # Django's psycopg backend binds parameters client-side, which escapes a bytea into SQL text
        # (twice the bytes, plus the escaping work); the raw psycopg cursor of the same connection and
        # transaction sends it as binary.
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(BUILD_LOG_APPEND_SQL, (drone.pk, build_id, start, data, attempt_number,
                                                  settings.SWARM_BUILD_LOG_MAX_BYTES))
            row = cursor.fetchone()
        appended = _log_append_answer(row, build_id=build_id, start=start, attempt_number=attempt_number)
        if data:
            size, number = appended.log_size, row[1]
            transaction.on_commit(lambda: events.emit_log_appended(build_id=build_id, attempt_number=number,
                                                                    log_size=size))
    return appended.log_size


def attempt_log_checksum(*, attempt: BuildAttempt) -> str:
    """`sha256:<hex>` of the attempt's stored log."""
    digest = hashlib.sha256()
    for data in attempt_log_iter(attempt=attempt):
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def attempt_log_iter(*, attempt: BuildAttempt, offset: int = 0):
    """Yield the attempt's log bytes from `offset` on, from the archive or the chunks."""
    if attempt.log_storage_key:
        with BlobStore().open(attempt.log_storage_key) as handle:
            handle.seek(offset)
            while True:
                data = handle.read(1024 * 1024)
                if not data:
                    return
                yield data
        return
    chunks = (BuildLogChunk.objects.filter(attempt=attempt, offset__gte=_chunk_floor(attempt, offset))
              .order_by("offset").values_list("offset", "data"))
    for chunk_offset, data in chunks.iterator(chunk_size=16):
        data = bytes(data)
        if chunk_offset < offset:
            data = data[offset - chunk_offset:]
        if data:
            yield data


def _chunk_floor(attempt: BuildAttempt, offset: int) -> int:
    if offset <= 0:
        return 0
    floor = (BuildLogChunk.objects.filter(attempt=attempt, offset__lte=offset)
             .order_by("-offset").values_list("offset", flat=True).first())
    return floor or 0


def attempt_log_storage_key(*, attempt: BuildAttempt) -> str:
    """Where an attempt's archived log lives in blob storage."""
    return f"builds/{attempt.build_id}/attempts/{attempt.number}/log.txt"


def attempt_archive_log(*, attempt_id: int) -> bool:
    """Concatenate a finished attempt's chunks into one blob, then drop the chunks. Idempotent."""
    with transaction.atomic():
        attempt = BuildAttempt.objects.select_for_update().filter(pk=attempt_id).first()
        if attempt is None or attempt.log_storage_key:
            return False
        if attempt.state in (AttemptState.ASSIGNED, AttemptState.RUNNING):
            return False
        store = BlobStore()
        key = attempt_log_storage_key(attempt=attempt)
        # Logs are capped (SWARM_BUILD_LOG_MAX_BYTES); spool to disk beyond 8 MiB.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            for data in attempt_log_iter(attempt=attempt):
                spool.write(data)
            spool.seek(0)
            if store.exists(key):
                store.delete(key)
            stored_key = store.storage.save(key, File(spool, name="log.txt"))
        attempt.log_storage_key = stored_key
        attempt.save(update_fields=["log_storage_key"])
        BuildLogChunk.objects.filter(attempt=attempt).delete()
    return True


def attempts_archive_pending(*, older_than_seconds: int = 60, limit: int = 200) -> int:
    """Archive logs of attempts that finished a while ago but still sit in chunks."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    attempt_ids = list(
        BuildAttempt.objects.filter(log_storage_key="", finished_at__lt=cutoff)
        .exclude(state__in=(AttemptState.ASSIGNED, AttemptState.RUNNING)).values_list("pk", flat=True)[:limit]
    )
    return sum(1 for attempt_id in attempt_ids if attempt_archive_log(attempt_id=attempt_id))
