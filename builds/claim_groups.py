"""Claims on the event loop, grouped: claims that arrive together share one database round trip.

On a busy fleet hundreds of idle drones ask for work at once. Alone, each
claim pays a round trip, a transaction and a commit (a WAL flush) of its
own. Here a claim goes to the database at once when fewer than
SWARM_CLAIM_GROUPS groups are there already (a lone claim never waits for
company); claims that arrive while they are wait together and go as the next
group: one call of `swarm_agent_build_claims` (builds/sql/), one
transaction, one commit. A group holds at most MAX_GROUP claims.

A group succeeds or fails whole. When the database refuses its statement
(an error it reports, so the transaction rolled back) nothing is claimed and
every request of the group gets `ClaimGroupRolledBack`, which certifies
that nothing was written: Django's view may answer them. Any other failure
— the connection lost mid-call, a row that cannot be read back — leaves the
group's claims possibly committed, and each request is answered 500, never
handed to Django (STYLE rule 13: a second claim for the same request).
"""
from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

import psycopg

from builds import metrics
from builds.agent_sql import AGENT_CLAIMS_SQL, agent_times
from builds.choices import NO_NEW_WORK_STATUSES
from swarm.core import async_db
from swarm.core.fast_routes import NothingWritten

#: The most claims one database call takes.
MAX_GROUP = 64


@dataclass(frozen=True)
class ClaimRequest:
    """One drone's `POST /api/v1/builds/request`: its token (as stored), free slots and labels."""

    prefix: str
    digest: str
    free_slots: int
    labels: list[str]


@dataclass(frozen=True)
class ClaimAnswer:
    """What the database answered one request: `view`, `none` or `claimed` (with the claim row)."""

    answer: str
    canceling_build_ids: list[int]
    claimed: tuple | None


class ClaimGroups:
    """The claims waiting on one event loop and the tasks sending them in groups."""

    def __init__(self):
        self._waiting: list[tuple[ClaimRequest, asyncio.Future]] = []
        self._senders = 0
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    async def claim(self, request: ClaimRequest) -> ClaimAnswer:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((request, future))
        if self._senders < max(settings.SWARM_CLAIM_GROUPS, 1):
            # Counted here and uncounted in the sender's last step, with no await in between: a claim
            # arriving as a sender finishes either is taken by it or starts a sender of its own.
            self._senders += 1
            sender = loop.create_task(self._send_waiting())
            self._tasks.add(sender)
            sender.add_done_callback(self._tasks.discard)
        return await future

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[:MAX_GROUP]
                del self._waiting[:MAX_GROUP]
                await self._send(group)
        finally:
            self._senders -= 1

    async def _send(self, group: list[tuple[ClaimRequest, asyncio.Future]]) -> None:
        try:
            rows = await self._call(group)
        except BaseException as error:  # every request of the group learns of it
            for _, future in group:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else ClaimGroupCancelled())
            if not isinstance(error, Exception):
                raise
            return
        answers = {row[0]: row for row in rows}
        for index, (_, future) in enumerate(group, start=1):
            if future.done():  # the request went away meanwhile
                continue
            row = answers.get(index)
            if row is None:
                future.set_exception(LookupError(f"the claim group answered no row for request {index}"))
                continue
            _, answer, canceling, *claimed = row
            future.set_result(ClaimAnswer(answer=answer, canceling_build_ids=list(canceling or []),
                                          claimed=tuple(claimed) if answer == "claimed" else None))

    @staticmethod
    async def _call(group: list[tuple[ClaimRequest, asyncio.Future]]) -> list[tuple]:
        """One call of `swarm_agent_build_claims` for the group; a row per request."""
        requests = [request for request, _ in group]
        metrics.CLAIM_GROUP_SIZE.observe(len(requests))
        now = timezone.now()
        params = {
            "prefixes": [request.prefix for request in requests],
            "digests": [request.digest for request in requests],
            "free_slots": [request.free_slots for request in requests],
            "labels": json.dumps([request.labels for request in requests]),
            **agent_times(now),
            "ack_deadline": now + timedelta(seconds=settings.SWARM_BUILD_ACK_TIMEOUT),
            "no_work_statuses": list(NO_NEW_WORK_STATUSES),
        }
        try:
            pool = await async_db.pool()
            connection = await pool.getconn()
        except Exception as error:  # no connection, no statement: nothing was written
            raise ClaimGroupRolledBack(f"no database connection for the claim group: {error}") from error
        try:
            try:
                cursor = await connection.execute(AGENT_CLAIMS_SQL, params)
            except psycopg.Error as error:
                if _rolled_back(error):
                    raise ClaimGroupRolledBack(f"the database refused the claim group: {error}") from error
                raise
            return await cursor.fetchall()
        finally:
            await pool.putconn(connection)


def _rolled_back(error: psycopg.Error) -> bool:
    """Whether the server reported this error for the statement (so its autocommit transaction rolled back).

    A lost connection (no SQLSTATE, or class 08) may have come after the
    commit: that is not known, so it does not count.
    """
    sqlstate = getattr(error, "sqlstate", None)
    return bool(sqlstate) and not sqlstate.startswith("08")


class ClaimGroupRolledBack(NothingWritten):
    """The group's statement failed in the database and rolled back: no request of it claimed anything."""


class ClaimGroupCancelled(Exception):
    """The task sending a group was cancelled (the server is stopping)."""


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ClaimGroups] = weakref.WeakKeyDictionary()


async def claim(request: ClaimRequest) -> ClaimAnswer:
    """Claim for one drone, in a group with the claims that arrive with it."""
    loop = asyncio.get_running_loop()
    groups = _by_loop.get(loop)
    if groups is None:
        groups = _by_loop[loop] = ClaimGroups()  # holds no reference to the loop: the entry dies with it
    return await groups.claim(request)
