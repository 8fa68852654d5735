"""Writes of the builds app: one keyword-only `<entity>_<action>()` per use case.

The API views, the admin actions, the webhook task and the reaper all call
these functions; nothing else changes a build's state.

Lock order, everywhere: drone row → queue row → build row → attempt row.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from builds import claim_groups, events
from builds.agent_sql import LOG_APPEND_SQL, agent_params, token_parts
from builds.claiming import CLAIM_SQL, ClaimedRow, claim_params, claimed_from_instances, claimed_from_row
from builds.choices import (
    ACTIVE_STATES,
    NO_NEW_WORK_STATUSES,
    TERMINAL_STATES,
    ArtifactState,
    AttemptState,
    BuildState,
    FailureReason,
    TriggerKind,
)
from builds.config import normalize_scm_url, retry_allowed, validate_build_config, validate_scm_url
from builds.models import Artifact, Build, BuildAttempt, BuildEvent, BuildLogChunk, Job, Queue
from swarm.core import async_db
from swarm.core.errors import ApiError, Conflict, NotFound
from swarm.core.secret_box import encrypt_mapping, encrypt_text
from swarm.core.services import audit_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DroneRef:
    """A drone known by id only: what the agent endpoints pass to services (no row load per call)."""

    pk: int


class LogRangeMismatch(ApiError):
    """The agent's `Content-Range` does not start where the stored log ends (HTTP 416)."""

    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, log_size: int, detail: str):
        super().__init__(detail, headers={"Range": f"0-{log_size}"})
        self.log_size = log_size


# --- jobs --------------------------------------------------------------------


#: The queues every installation has (also created by migration 0002).
DEFAULT_QUEUES = (
    {"name": "default", "priority": 50, "description": "Everyday builds."},
    {"name": "test", "priority": 10, "description": "Low-priority test builds; claimed after every other queue."},
)


def queues_ensure_defaults() -> None:
    """Create the `default` and low-priority `test` queues when they are missing."""
    for queue in DEFAULT_QUEUES:
        Queue.objects.get_or_create(name=queue["name"], defaults=queue)


def _default_queue() -> Queue:
    queue = Queue.objects.filter(name="default").first()
    if queue is None:
        queues_ensure_defaults()
        queue = Queue.objects.get(name="default")
    return queue


def job_create(
    *,
    name: str,
    scm_url: str,
    build_config: dict,
    tenant=None,
    queue: Queue | None = None,
    default_branch: str = "main",
    branch_filter: str = "",
    description: str = "",
    scm_credential: str = "",
    secrets: dict[str, str] | None = None,
    webhook_secret: str = "",
    actor="system",
) -> Job:
    """Create a job after validating its URL and build config."""
    config = validate_build_config(build_config)
    validate_scm_url(scm_url)
    _validate_secrets(secrets or {})
    if Job.objects.filter(tenant=tenant, name=name).exists():
        raise Conflict(f"A job named {name!r} already exists.", field="name")
    job = Job.objects.create(
        tenant=tenant,
        name=name,
        description=description,
        scm_url=scm_url.strip(),
        scm_url_normalized=normalize_scm_url(scm_url),
        default_branch=default_branch or "main",
        branch_filter=branch_filter,
        build_config=config,
        queue=queue or _default_queue(),
        scm_credential_encrypted=encrypt_text(scm_credential),
        secrets_encrypted=encrypt_mapping(secrets or {}),
        webhook_secret=webhook_secret,
    )
    audit_record(actor=actor, action="job.create", obj=job, tenant_id=job.tenant_id)
    return job


def _validate_secrets(secrets: dict) -> None:
    from builds.config import ENV_NAME

    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        raise ApiError("secrets: must map names to string values", code="invalid", field="secrets")
    for name in secrets:
        if not ENV_NAME.match(name):
            raise ApiError(f"secrets: {name!r} is not a valid variable name", code="invalid", field="secrets")


def job_update(*, job: Job, actor="system", **changes) -> Job:
    """Change a job's fields; secrets are replaced only when given."""
    if "build_config" in changes:
        job.build_config = validate_build_config(changes.pop("build_config"))
    if "scm_url" in changes:
        url = validate_scm_url(changes.pop("scm_url"))
        job.scm_url = url
        job.scm_url_normalized = normalize_scm_url(url)
    if "scm_credential" in changes:
        job.scm_credential_encrypted = encrypt_text(changes.pop("scm_credential") or "")
    if "secrets" in changes:
        secrets = changes.pop("secrets") or {}
        _validate_secrets(secrets)
        job.secrets_encrypted = encrypt_mapping(secrets)
    if "name" in changes and changes["name"] != job.name:
        if Job.objects.filter(tenant_id=job.tenant_id, name=changes["name"]).exclude(pk=job.pk).exists():
            raise Conflict(f"A job named {changes['name']!r} already exists.", field="name")
    for name, value in changes.items():
        setattr(job, name, value)
    job.save()
    audit_record(actor=actor, action="job.update", obj=job, tenant_id=job.tenant_id)
    return job


def job_delete(*, job: Job, actor="system") -> None:
    """Delete a job and its builds; refused while one of its builds is held by a drone."""
    if job.builds.filter(state__in=ACTIVE_STATES).exists():
        raise Conflict("The job has builds running; cancel them first.")
    audit_record(actor=actor, action="job.delete", obj=job, tenant_id=job.tenant_id)
    job.delete()


# --- triggering --------------------------------------------------------------


def _record(build: Build, kind: str, *, actor: str = "", attempt_number: int | None = None, **detail) -> None:
    BuildEvent.objects.create(build=build, kind=kind, actor=str(actor)[:200], attempt_number=attempt_number,
                              detail=detail)


def build_trigger(
    *,
    job: Job,
    trigger: str,
    triggered_by: str = "",
    branch: str = "",
    commit_sha: str = "",
    params: dict | None = None,
    retry_of: Build | None = None,
) -> Build:
    """Queue a new build of `job`; idle drones that could take it are told at once."""
    if trigger not in TriggerKind.values:
        raise ApiError(f"unknown trigger {trigger!r}", field="trigger")
    if commit_sha and not all(c in "0123456789abcdef" for c in commit_sha.lower()):
        raise ApiError("commit_sha: must be a hexadecimal commit id", code="invalid", field="commit_sha")
    if params is not None and not isinstance(params, dict):
        raise ApiError("params: must be an object", code="invalid", field="params")
    with transaction.atomic():
        locked = Job.objects.select_for_update().select_related("queue").get(pk=job.pk)
        if not locked.enabled:
            raise Conflict(f"Job {locked.name!r} is disabled.")
        number = locked.next_build_number
        Job.objects.filter(pk=locked.pk).update(next_build_number=F("next_build_number") + 1)
        config = locked.build_config
        now = timezone.now()
        build = Build.objects.create(
            job=locked,
            number=number,
            commit_sha=(commit_sha or "").lower(),
            branch=branch or locked.default_branch,
            trigger=trigger,
            triggered_by=str(triggered_by)[:200],
            params=params or {},
            retry_of=retry_of,
            queue=locked.queue,
            queue_priority=locked.queue.priority,
            required_labels=list(config.get("labels", [])),
            timeout_seconds=int(config.get("timeout", 3600)),
            created_at=now,
            queued_at=now,
        )
        _record(build, "queued", actor=triggered_by, trigger=trigger, branch=build.branch, commit_sha=build.commit_sha)
        transaction.on_commit(lambda: build_nudge_idle_drones(build_id=build.pk))
        transaction.on_commit(lambda: events.emit_build_changed(build_id=build.pk, state=build.state,
                                                                 attempt_number=0))
    return build


def build_nudge_idle_drones(*, build_id: int, limit: int = 10) -> int:
    """Tell idle drones with the labels and a free slot that work is waiting. Returns how many."""
    from drones.models import Drone

    build = Build.objects.filter(pk=build_id, state=BuildState.PENDING).only("required_labels").first()
    if build is None:
        return 0
    candidates = (
        Drone.objects.filter(labels__contains=list(build.required_labels))
        .exclude(status__in=NO_NEW_WORK_STATUSES)
        .annotate(held=Count("builds", filter=Q(builds__state__in=ACTIVE_STATES)))
        .filter(held__lt=F("capacity"))
        .order_by("held", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    for drone_id in candidates:
        events.tell_drone(drone_id, {"type": "build_available", "build_id": build_id})
        sent += 1
    return sent


# --- claiming ----------------------------------------------------------------


@dataclass
class ClaimResult:
    """A build handed to a drone, with the attempt it runs as (`claimed`: what the claim returned)."""

    claimed: ClaimedRow
    lease_seconds: int = 0
    ack_timeout: int = 0
    seconds: float = 0.0

    @property
    def state(self) -> str:
        return self.claimed.build["state"]

    @cached_property
    def build(self) -> Build:
        """The claimed build and its job, read from the database."""
        return Build.objects.select_related("job").get(pk=self.claimed.build["id"])

    @cached_property
    def attempt(self) -> BuildAttempt:
        """The claim's attempt, read from the database."""
        return BuildAttempt.objects.get(pk=self.claimed.attempt_id)


@dataclass
class _QueueLimits:
    full_queue_ids: set[int] = field(default_factory=set)
    limited_queue_ids: set[int] = field(default_factory=set)
    rate_blocked: list[tuple[int, int | None]] = field(default_factory=list)
    rate_limited: bool = False


def _queue_limits(now) -> _QueueLimits:
    """Queues at their concurrency cap and (queue, tenant) pairs over their start rate."""
    limits = _QueueLimits()
    limited = list(
        Queue.objects.filter(Q(max_concurrent__isnull=False) | Q(tenant_rate_limit_per_minute__isnull=False))
        .values_list("pk", "max_concurrent", "tenant_rate_limit_per_minute")
    )
    if not limited:
        return limits
    capped = [(pk, cap) for pk, cap, _ in limited if cap is not None]
    rated = {pk: rate for pk, _, rate in limited if rate is not None}
    limits.rate_limited = bool(rated)
    if capped:
        limits.limited_queue_ids = {pk for pk, _ in capped}
        held = dict(
            Build.objects.filter(queue_id__in=limits.limited_queue_ids, state__in=ACTIVE_STATES)
            .values_list("queue_id").annotate(n=Count("id")).values_list("queue_id", "n")
        )
        limits.full_queue_ids = {pk for pk, cap in capped if held.get(pk, 0) >= cap}
    if rated:
        recent = (
            BuildAttempt.objects.filter(build__queue_id__in=rated, assigned_at__gte=now - timedelta(minutes=1))
            .values_list("build__queue_id", "build__job__tenant_id").annotate(n=Count("id"))
        )
        limits.rate_blocked = [(queue_id, tenant_id) for queue_id, tenant_id, n in recent if n >= rated[queue_id]]
    return limits


def build_claim(*, drone, free_slots: int = 1, labels: list[str] | None = None) -> ClaimResult | None:
    """Hand the best pending build this drone can run to it, or None.

    One transaction: serialise this drone's claims (`swarm_lock_drone_claims`,
    a transaction advisory lock, so its capacity holds), pick the
    highest-priority pending build whose labels are a subset of the drone's
    with `FOR UPDATE SKIP LOCKED` (a build another drone is claiming right now
    is skipped, never waited for nor handed out twice), and assign it as a new
    numbered attempt.
    """
    from django.db import connection

    from drones.models import Drone

    started = time.perf_counter()
    if free_slots < 1:
        return None
    lease = settings.SWARM_BUILD_LEASE_SECONDS
    ack_timeout = settings.SWARM_BUILD_ACK_TIMEOUT
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT swarm_lock_drone_claims(%s)", [drone.pk])
        locked_drone = Drone.objects.only("pk", "name", "status", "labels", "capacity").filter(pk=drone.pk).first()
        if locked_drone is None:
            raise NotFound("This drone no longer exists.")
        if locked_drone.status in NO_NEW_WORK_STATUSES:
            return None
        drone_labels = list(locked_drone.labels or labels or [])
        now = timezone.now()
        limits = _queue_limits(now)
        if not limits.limited_queue_ids and not limits.rate_limited:
            claimed = _claim_in_one_statement(drone=locked_drone, labels=drone_labels, now=now, lease=lease,
                                              ack_timeout=ack_timeout)
        else:
            claimed = _claim_with_queue_limits(drone=locked_drone, labels=drone_labels, now=now, lease=lease,
                                               ack_timeout=ack_timeout, limits=limits)
        if claimed is None:
            return None
        build_id, attempt_number = claimed.build["id"], claimed.attempt_number
        transaction.on_commit(lambda: events.emit_build_changed(
            build_id=build_id, state=BuildState.ASSIGNED, attempt_number=attempt_number))
    return ClaimResult(claimed=claimed, lease_seconds=lease, ack_timeout=ack_timeout,
                       seconds=time.perf_counter() - started)


def _claim_in_one_statement(*, drone, labels, now, lease: int, ack_timeout: int) -> ClaimedRow | None:
    """The claim as one statement (after the drone's claim lock): capacity, pick, assign, attempt, event.

    It runs after the lock in a statement of its own, so its snapshot sees
    every earlier claim of this drone; `SKIP LOCKED` passes over builds
    other drones are claiming right now. The statement returns the build and
    its job too (builds/claiming.py).
    """
    from django.db import connection

    params = claim_params(drone_id=drone.pk, drone_name=drone.name, capacity=drone.capacity, labels=labels,
                          now=now, lease=lease, ack_timeout=ack_timeout)
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return claimed_from_row(row)


def _claim_with_queue_limits(*, drone, labels, now, lease: int, ack_timeout: int,
                             limits: _QueueLimits) -> ClaimedRow | None:
    """The claim step by step, for when some queue caps concurrency or tenant start rates."""
    held = Build.objects.filter(drone_id=drone.pk, state__in=ACTIVE_STATES).count()
    if held >= max(int(drone.capacity or 0), 0):
        return None
    skipped_queue_ids: set[int] = set(limits.full_queue_ids)
    for _ in range(5):
        candidates = (
            Build.objects.filter(state=BuildState.PENDING, required_labels__contained_by=labels)
            .exclude(Q(avoid_drone_ids__contains=[drone.pk]) & Q(avoid_until__gt=now))
            .order_by("-queue_priority", "id")
        )
        if skipped_queue_ids:
            candidates = candidates.exclude(queue_id__in=skipped_queue_ids)
        for queue_id, tenant_id in limits.rate_blocked:
            candidates = candidates.exclude(Q(queue_id=queue_id) & Q(job__tenant_id=tenant_id))
        build = candidates.select_for_update(skip_locked=True, of=("self",)).first()
        if build is None:
            return None
        if build.queue_id in limits.limited_queue_ids:
            # A capped queue: serialise its claims on the queue row and recount under the lock.
            queue = Queue.objects.select_for_update().get(pk=build.queue_id)
            held_in_queue = Build.objects.filter(queue_id=queue.pk, state__in=ACTIVE_STATES).count()
            if held_in_queue >= (queue.max_concurrent or 0):
                skipped_queue_ids.add(queue.pk)
                continue
        break
    else:
        return None
    attempt_number = build.attempt_count + 1
    attempt = BuildAttempt.objects.create(build=build, number=attempt_number, drone_id=drone.pk,
                                         state=AttemptState.ASSIGNED, assigned_at=now)
    build.state = BuildState.ASSIGNED
    build.drone_id = drone.pk
    build.attempt_count = attempt_number
    build.assigned_at = now
    build.ack_deadline = now + timedelta(seconds=ack_timeout)
    build.lease_expires_at = now + timedelta(seconds=lease)
    build.save(update_fields=["state", "drone_id", "attempt_count", "assigned_at", "ack_deadline",
                              "lease_expires_at"])
    _record(build, "claimed", actor=f"drone:{drone.pk}", attempt_number=attempt_number, drone=drone.name)
    return claimed_from_instances(build, attempt)


# --- the agent's hot calls on the event loop ----------------------------------


class ClaimUnanswerable(ApiError):
    """A build was assigned but could not be read back: the drone must ask again (it returns after the ack timeout)."""

    status_code = 500
    code = "server_error"


@dataclass
class AsyncClaim:
    """What `build_claim_async` did: the claim (None: nothing for this drone) and the drone's canceling builds."""

    result: ClaimResult | None
    canceling_build_ids: list[int]


async def build_claim_async(*, token: str, free_slots: int, labels: list[str] | None) -> AsyncClaim | None:
    """`build_claim` for a drone token on the event loop; None when the view must answer.

    The claim goes to the database in a group with the claims that arrive
    with it (builds/claim_groups.py): one call checks each token, renews the
    drone's leases, serialises its claims and runs the claim `build_claim`
    runs. The view answers for an unknown or foreign token, a drone that is
    gone, and any queue with limits (nothing is claimed then).
    """
    started = time.perf_counter()
    parts = token_parts(token)
    if parts is None:
        return None
    answer = await claim_groups.claim(claim_groups.ClaimRequest(prefix=parts[0], digest=parts[1],
                                                                free_slots=free_slots, labels=labels or []))
    if answer.answer == "view":
        return None
    if answer.answer != "claimed":
        return AsyncClaim(result=None, canceling_build_ids=answer.canceling_build_ids)
    try:
        row = claimed_from_row(answer.claimed)
    except Exception as error:  # noqa: BLE001 - assigned already: the view must not claim a second build
        logger.exception("claimed build could not be read back")
        raise ClaimUnanswerable("The claim could not be answered; ask again.") from error
    await events.emit_build_changed_async(build_id=row.build["id"], state=BuildState.ASSIGNED,
                                          attempt_number=row.attempt_number)
    result = ClaimResult(claimed=row, lease_seconds=settings.SWARM_BUILD_LEASE_SECONDS,
                         ack_timeout=settings.SWARM_BUILD_ACK_TIMEOUT, seconds=time.perf_counter() - started)
    return AsyncClaim(result=result, canceling_build_ids=answer.canceling_build_ids)


@dataclass
class LogAppended:
    """The log's new size and the build's state after `build_log_append_async`."""

    log_size: int
    build_state: str


async def build_log_append_async(*, token: str, build_id: int, start: int, data: bytes,
                                 attempt_number: int | None = None) -> LogAppended | None:
    """`build_log_append` for a drone token on the event loop's async connection; None when the view must answer.

    One round trip: the database function `swarm_agent_log_append` (SQL in
    builds/agent_sql.py) checks the token, renews the drone's leases, locks
    the attempt and stores the chunk. The view answers (and refuses) a wrong
    offset (416 with the stored size), a superseded attempt (409), an archived
    log, a log over its size limit, an empty patch and a build this drone
    does not hold.
    """
    params = agent_params(token, timezone.now())
    if params is None or not data:
        return None
    params.update(build=build_id, start=start, data=data, attempt=attempt_number,
                  max_bytes=settings.SWARM_BUILD_LOG_MAX_BYTES)
    pool = await async_db.pool()
    async with pool.connection() as connection:
        cursor = await connection.execute(LOG_APPEND_SQL, params)
        answer, number, size, state = await cursor.fetchone()
    if answer != "appended":
        return None
    await events.emit_log_appended_async(build_id=build_id, attempt_number=number, log_size=size)
    return LogAppended(log_size=size, build_state=state)


# --- the agent's calls -------------------------------------------------------


def _held_build(build_id: int, drone, attempt_number: int | None) -> Build:
    """The build if this drone holds it (in the named attempt, when given), else an error."""
    build = Build.objects.filter(pk=build_id).select_related("job").first()
    if build is None or build.drone_id != drone.pk:
        raise NotFound("No such build assigned to this drone.")
    if attempt_number is not None and attempt_number != build.attempt_count:
        raise Conflict(f"Attempt {attempt_number} is over; the build is on attempt {build.attempt_count}.",
                       code="attempt_superseded")
    return build


def builds_renew_leases(*, drone) -> int:
    """Extend the lease of every build the drone holds (any agent call proves it alive)."""
    now = timezone.now()
    lease = settings.SWARM_BUILD_LEASE_SECONDS
    # Only rows whose lease is more than a second old are rewritten, so a busy
    # log stream does not turn every PATCH into an extra row update.
    return Build.objects.filter(
        drone_id=drone.pk, state__in=(BuildState.RUNNING, BuildState.CANCELING),
        lease_expires_at__lt=now + timedelta(seconds=lease - 1),
    ).update(lease_expires_at=now + timedelta(seconds=lease))


def build_log_append(*, build_id: int, drone, start: int, data: bytes, attempt_number: int | None = None) -> int:
    """Append `data` at byte `start` of the current attempt's log; returns the new log size.

    The start must equal the stored size (else `LogRangeMismatch` carrying the
    stored size, so the agent resumes there and nothing is lost or doubled).
    """
    build = _held_build(build_id, drone, attempt_number)
    max_bytes = settings.SWARM_BUILD_LOG_MAX_BYTES
    with transaction.atomic():
        attempt = BuildAttempt.objects.select_for_update().get(build_id=build.pk, number=build.attempt_count)
        if attempt.drone_id != drone.pk:
            raise NotFound("No such build assigned to this drone.")
        if attempt.log_storage_key:
            raise Conflict("This attempt's log is archived; nothing more can be appended.", code="log_archived")
        if start != attempt.log_size:
            raise LogRangeMismatch(attempt.log_size,
                                   f"The log has {attempt.log_size} bytes; a patch must start there, not at {start}.")
        if not data:
            return attempt.log_size
        if attempt.log_size + len(data) > max_bytes:
            raise ApiError(f"The log would exceed {max_bytes} bytes.", code="log_size_exceeded", status_code=413)
        _insert_log_chunk(attempt_id=attempt.pk, offset=start, data=data)
        attempt.log_size = start + len(data)
        BuildAttempt.objects.filter(pk=attempt.pk).update(log_size=attempt.log_size)
        size, number = attempt.log_size, attempt.number
        transaction.on_commit(lambda: events.emit_log_appended(build_id=build.pk, attempt_number=number,
                                                                log_size=size))
    return size


def _insert_log_chunk(*, attempt_id: int, offset: int, data: bytes) -> None:
    """Insert one chunk with a server-side-bound parameter.

    Django's psycopg backend binds parameters client-side, which escapes a
    bytea into SQL text (twice the bytes, plus the escaping work); the raw
    psycopg cursor of the same connection and transaction sends it as binary.
    """
    import psycopg
    from django.db import connection

    connection.ensure_connection()
    table = BuildLogChunk._meta.db_table
    # The connection's default cursor factory is Django's ClientCursor; ask for a plain one.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f'INSERT INTO {table} (attempt_id, "offset", data) VALUES (%s, %s, %s)',
                       (attempt_id, offset, data))


def attempt_log_checksum(attempt: BuildAttempt) -> str:
    """`sha256:<hex>` of the attempt's stored log."""
    digest = hashlib.sha256()
    for data in attempt_log_iter(attempt):
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def attempt_log_iter(attempt: BuildAttempt, offset: int = 0):
    """Yield the attempt's log bytes from `offset` on, from the archive or the chunks."""
    if attempt.log_storage_key:
        from bundles.blobstore import BlobStore

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


def build_set_running(*, build_id: int, drone, attempt_number: int | None = None, commit_sha: str = "") -> Build:
    """Acknowledge an assigned build (two-phase start) or keep a running one alive."""
    build = _held_build(build_id, drone, attempt_number)
    with transaction.atomic():
        build = Build.objects.select_for_update().get(pk=build.pk)
        now = timezone.now()
        lease_until = now + timedelta(seconds=settings.SWARM_BUILD_LEASE_SECONDS)
        if build.state == BuildState.ASSIGNED:
            attempt = BuildAttempt.objects.select_for_update().get(build=build, number=build.attempt_count)
            build.state = BuildState.RUNNING
            build.started_at = build.started_at or now
            build.lease_expires_at = lease_until
            build.ack_deadline = None
            if commit_sha and not build.commit_sha:
                build.commit_sha = commit_sha.lower()[:64]
            build.save(update_fields=["state", "started_at", "lease_expires_at", "ack_deadline", "commit_sha"])
            attempt.state = AttemptState.RUNNING
            attempt.started_at = now
            attempt.save(update_fields=["state", "started_at"])
            _record(build, "started", actor=f"drone:{drone.pk}", attempt_number=attempt.number)
            transaction.on_commit(lambda: events.emit_build_changed(
                build_id=build.pk, state=BuildState.RUNNING, attempt_number=attempt.number))
        elif build.state in (BuildState.RUNNING, BuildState.CANCELING):
            build.lease_expires_at = lease_until
            fields = ["lease_expires_at"]
            if commit_sha and not build.commit_sha:
                build.commit_sha = commit_sha.lower()[:64]
                fields.append("commit_sha")
            build.save(update_fields=fields)
    return build


def build_finish_from_agent(
    *,
    build_id: int,
    drone,
    state: str,
    exit_code: int | None = None,
    failure_reason: str = "",
    log_bytesize: int,
    log_checksum: str,
    attempt_number: int | None = None,
) -> Build:
    """The agent's final report for its attempt.

    `log_bytesize` must equal the stored size (else 416 with the server's
    Range: the agent sends the missing tail and reports again). The stored
    log's sha256 is recorded next to the reported one.
    """
    if state not in (BuildState.SUCCESS, BuildState.FAILED, BuildState.CANCELED):
        raise ApiError("state: must be running, success, failed or canceled", code="invalid", field="state")
    if failure_reason and failure_reason not in FailureReason.values:
        raise ApiError(f"failure_reason: unknown reason {failure_reason!r}", code="invalid", field="failure_reason")
    build = _held_build(build_id, drone, attempt_number)
    with transaction.atomic():
        build = Build.objects.select_for_update().select_related("job").get(pk=build.pk)
        attempt = BuildAttempt.objects.select_for_update().get(build=build, number=build.attempt_count)
        if build.state not in ACTIVE_STATES or attempt.state not in (AttemptState.ASSIGNED, AttemptState.RUNNING):
            return build  # already decided (reaped or canceled); the agent learns it from Job-Status
        if log_bytesize != attempt.log_size:
            raise LogRangeMismatch(attempt.log_size, f"The server holds {attempt.log_size} log bytes, "
                                                     f"not {log_bytesize}; send the rest and report again.")
        stored_checksum = attempt_log_checksum(attempt)
        attempt.log_checksum = stored_checksum
        attempt.log_checksum_reported = (log_checksum or "")[:80]
        attempt.save(update_fields=["log_checksum", "log_checksum_reported"])
        if log_checksum and log_checksum != stored_checksum:
            _record(build, "log_checksum_mismatch", actor=f"drone:{drone.pk}", attempt_number=attempt.number,
                    reported=log_checksum, stored=stored_checksum)
        if build.state == BuildState.CANCELING:
            state, failure_reason = BuildState.CANCELED, ""
        elif state == BuildState.FAILED and not failure_reason:
            failure_reason = FailureReason.SCRIPT_FAILURE
        elif state != BuildState.FAILED:
            failure_reason = ""
        _attempt_finish(build=build, attempt=attempt, state=state, failure_reason=failure_reason,
                        exit_code=exit_code, actor=f"drone:{drone.pk}")
    return build


def _attempt_finish(*, build: Build, attempt: BuildAttempt, state: str, failure_reason: str = "",
                    exit_code: int | None = None, actor: str = "", detail: str = "",
                    allow_retry: bool = True) -> None:
    """Close an attempt and decide the build: done, or queued again as the next attempt.

    Called with the build and attempt rows locked.
    """
    now = timezone.now()
    attempt.state = {BuildState.SUCCESS: AttemptState.SUCCESS, BuildState.CANCELED: AttemptState.CANCELED}.get(
        state, AttemptState.FAILED)
    attempt.failure_reason = failure_reason
    attempt.exit_code = exit_code
    attempt.finished_at = now
    attempt.detail = detail[:500]
    attempt.save(update_fields=["state", "failure_reason", "exit_code", "finished_at", "detail"])
    retry = (
        allow_retry and state == BuildState.FAILED
        and retry_allowed(build.job.build_config, failure_reason=failure_reason, retries_used=build.retries_used)
    )
    attempt_id = attempt.pk
    transaction.on_commit(lambda: _enqueue("builds.archive_attempt_log", attempt_id))
    if retry:
        previous_drone = build.drone_id
        build.state = BuildState.PENDING
        build.retries_used += 1
        build.drone_id = None
        build.queued_at = now
        build.assigned_at = None
        build.ack_deadline = None
        build.lease_expires_at = None
        build.failure_reason = failure_reason
        build.exit_code = exit_code
        if previous_drone:
            build.avoid_drone_ids = sorted(set(build.avoid_drone_ids) | {previous_drone})
            build.avoid_until = now + timedelta(seconds=settings.SWARM_BUILD_RETRY_AVOID_SECONDS)
        build.save()
        _record(build, "retry_queued", actor=actor, attempt_number=attempt.number, failure_reason=failure_reason,
                detail=detail, retries_used=build.retries_used)
        build_id = build.pk
        transaction.on_commit(lambda: build_nudge_idle_drones(build_id=build_id))
    else:
        build.state = state
        build.failure_reason = failure_reason
        build.exit_code = exit_code
        build.finished_at = now
        build.lease_expires_at = None
        build.ack_deadline = None
        build.save()
        _record(build, "finished", actor=actor, attempt_number=attempt.number, state=state,
                failure_reason=failure_reason, exit_code=exit_code, detail=detail)
        build_id = build.pk
        transaction.on_commit(lambda: _enqueue("builds.notify_build_finished", build_id))
    new_state, number = build.state, attempt.number
    transaction.on_commit(lambda: events.emit_build_changed(build_id=build.pk, state=new_state,
                                                            attempt_number=number))


def _enqueue(task_name: str, object_id: int) -> None:
    from builds import tasks

    task = {"builds.archive_attempt_log": tasks.archive_attempt_log,
            "builds.notify_build_finished": tasks.notify_build_finished}[task_name]
    try:
        task.delay(object_id)
    except Exception:  # noqa: BLE001 - the sweep picks up unarchived logs and the build is already decided
        logger.warning("could not enqueue %s(%s)", task_name, object_id, exc_info=True)


# --- cancel and retry --------------------------------------------------------


def build_cancel(*, build: Build, actor="system") -> Build:
    """Cancel a build: a pending one at once; a held one goes to `canceling` and its drone is told."""
    with transaction.atomic():
        build = Build.objects.select_for_update().select_related("job").get(pk=build.pk)
        if build.state in TERMINAL_STATES:
            raise Conflict(f"Build {build} is already {build.state}.", code="already_finished")
        now = timezone.now()
        if build.state == BuildState.CANCELING:
            return build
        if build.state == BuildState.PENDING:
            build.state = BuildState.CANCELED
            build.finished_at = now
            build.cancel_requested_at = now
            build.save(update_fields=["state", "finished_at", "cancel_requested_at"])
            _record(build, "canceled", actor=actor)
            build_id = build.pk
            transaction.on_commit(lambda: _enqueue("builds.notify_build_finished", build_id))
        else:
            build.state = BuildState.CANCELING
            build.cancel_requested_at = now
            build.save(update_fields=["state", "cancel_requested_at"])
            _record(build, "cancel_requested", actor=actor, attempt_number=build.attempt_count)
            drone_id, build_id = build.drone_id, build.pk
            if drone_id:
                transaction.on_commit(lambda: events.tell_drone(drone_id, {
                    "type": "cancel_build", "build_id": build_id, "grace": settings.SWARM_BUILD_CANCEL_GRACE}))
        state, number = build.state, build.attempt_count
        transaction.on_commit(lambda: events.emit_build_changed(build_id=build.pk, state=state,
                                                                attempt_number=number))
    audit_record(actor=actor, action="build.cancel", obj=build, tenant_id=build.job.tenant_id)
    return build


def build_retry(*, build: Build, actor="system") -> Build:
    """Run a finished build again as a new build (trigger `retry`) of the same commit."""
    if build.state not in TERMINAL_STATES:
        raise Conflict(f"Build {build} is still {build.state}; only finished builds can be retried.",
                       code="not_finished")
    new_build = build_trigger(job=build.job, trigger=TriggerKind.RETRY, triggered_by=str(actor), branch=build.branch,
                              commit_sha=build.commit_sha, params=build.params, retry_of=build)
    audit_record(actor=actor, action="build.retry", obj=new_build, tenant_id=build.job.tenant_id,
                 detail={"retry_of": build.pk})
    return new_build


# --- the reaper --------------------------------------------------------------


@dataclass
class ReapReport:
    """What one reaper pass did (ids per category)."""

    requeued_unacknowledged: list[int] = field(default_factory=list)
    lease_expired: list[int] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)


def builds_reap(*, now=None) -> ReapReport:
    """Fail or requeue builds whose drone stopped answering, that waited or ran too long.

    * assigned, not acknowledged before the ack deadline → back to the queue;
    * held with an expired lease → `runner_system_failure` (canceling → canceled);
    * pending longer than SWARM_BUILD_PENDING_LIMIT → `stuck_or_timeout_failure`;
    * running past its timeout plus SWARM_BUILD_TIMEOUT_GRACE → `job_execution_timeout`,
      and the drone is told to kill it.

    Each build is handled in its own transaction, locked with SKIP LOCKED, with
    its condition checked again under the lock.
    """
    now = now or timezone.now()
    report = ReapReport()
    unacked = Build.objects.filter(state=BuildState.ASSIGNED, ack_deadline__lt=now).values_list("pk", flat=True)
    for build_id in list(unacked[:500]):
        if _reap_one(build_id, now, "unacknowledged"):
            report.requeued_unacknowledged.append(build_id)
    expired = Build.objects.filter(
        state__in=(BuildState.RUNNING, BuildState.CANCELING), lease_expires_at__lt=now
    ).values_list("pk", flat=True)
    for build_id in list(expired[:500]):
        if _reap_one(build_id, now, "lease"):
            report.lease_expired.append(build_id)
    pending_cutoff = now - timedelta(seconds=settings.SWARM_BUILD_PENDING_LIMIT)
    stuck = Build.objects.filter(state=BuildState.PENDING, queued_at__lt=pending_cutoff).values_list("pk", flat=True)
    for build_id in list(stuck[:500]):
        if _reap_one(build_id, now, "stuck"):
            report.stuck.append(build_id)
    running = Build.objects.filter(state=BuildState.RUNNING, started_at__isnull=False).values_list(
        "pk", "started_at", "timeout_seconds")
    grace = settings.SWARM_BUILD_TIMEOUT_GRACE
    for build_id, started_at, timeout in list(running[:2000]):
        if started_at + timedelta(seconds=timeout + grace) < now and _reap_one(build_id, now, "timeout"):
            report.timed_out.append(build_id)
    return report


def _reap_one(build_id: int, now, kind: str) -> bool:
    with transaction.atomic():
        build = (Build.objects.select_for_update(skip_locked=True).select_related("job")
                 .filter(pk=build_id).first())
        if build is None:
            return False
        attempt = None
        if build.attempt_count:
            attempt = BuildAttempt.objects.select_for_update().filter(build=build, number=build.attempt_count).first()
        if kind == "unacknowledged":
            if build.state != BuildState.ASSIGNED or not build.ack_deadline or build.ack_deadline >= now:
                return False
            # The drone took it but never started it: the build goes back to the
            # queue without spending a retry; the attempt row stays as the record.
            if attempt is not None:
                attempt.state = AttemptState.FAILED
                attempt.failure_reason = FailureReason.RUNNER_SYSTEM_FAILURE
                attempt.detail = "not acknowledged before the ack timeout; requeued"
                attempt.finished_at = now
                attempt.save(update_fields=["state", "failure_reason", "detail", "finished_at"])
            build.state = BuildState.PENDING
            build.drone_id = None
            build.assigned_at = None
            build.ack_deadline = None
            build.lease_expires_at = None
            build.queued_at = now
            build.save()
            _record(build, "requeued_unacknowledged", actor="reaper",
                    attempt_number=attempt.number if attempt else None)
            build_pk = build.pk
            transaction.on_commit(lambda: build_nudge_idle_drones(build_id=build_pk))
            return True
        if kind == "lease":
            if build.state not in (BuildState.RUNNING, BuildState.CANCELING) or not build.lease_expires_at \
                    or build.lease_expires_at >= now or attempt is None:
                return False
            if build.state == BuildState.CANCELING:
                _attempt_finish(build=build, attempt=attempt, state=BuildState.CANCELED, actor="reaper",
                                detail="lease expired while canceling")
            else:
                _attempt_finish(build=build, attempt=attempt, state=BuildState.FAILED,
                                failure_reason=FailureReason.RUNNER_SYSTEM_FAILURE, actor="reaper",
                                detail=f"lease expired at {build.lease_expires_at.isoformat()}")
            return True
        if kind == "stuck":
            cutoff = now - timedelta(seconds=settings.SWARM_BUILD_PENDING_LIMIT)
            if build.state != BuildState.PENDING or build.queued_at >= cutoff:
                return False
            build.state = BuildState.FAILED
            build.failure_reason = FailureReason.STUCK_OR_TIMEOUT_FAILURE
            build.finished_at = now
            build.save(update_fields=["state", "failure_reason", "finished_at"])
            _record(build, "finished", actor="reaper", state=build.state, failure_reason=build.failure_reason,
                    detail="no drone took the build in time")
            build_pk = build.pk
            transaction.on_commit(lambda: _enqueue("builds.notify_build_finished", build_pk))
            transaction.on_commit(lambda: events.emit_build_changed(build_id=build_pk, state=BuildState.FAILED,
                                                                    attempt_number=build.attempt_count))
            return True
        if kind == "timeout":
            deadline = (build.started_at or now) + timedelta(
                seconds=build.timeout_seconds + settings.SWARM_BUILD_TIMEOUT_GRACE)
            if build.state != BuildState.RUNNING or deadline >= now or attempt is None:
                return False
            drone_id, build_pk = build.drone_id, build.pk
            _attempt_finish(build=build, attempt=attempt, state=BuildState.FAILED,
                            failure_reason=FailureReason.JOB_EXECUTION_TIMEOUT, actor="reaper",
                            detail=f"ran longer than {build.timeout_seconds}s", allow_retry=False)
            if drone_id:
                transaction.on_commit(lambda: events.tell_drone(drone_id, {
                    "type": "cancel_build", "build_id": build_pk, "reason": "job_execution_timeout",
                    "grace": settings.SWARM_BUILD_CANCEL_GRACE}))
            return True
    return False


# --- logs and artifacts storage ----------------------------------------------


def attempt_log_storage_key(attempt: BuildAttempt) -> str:
    """Where an attempt's archived log lives in blob storage."""
    return f"builds/{attempt.build_id}/attempts/{attempt.number}/log.txt"


def attempt_archive_log(*, attempt_id: int) -> bool:
    """Concatenate a finished attempt's chunks into one blob, then drop the chunks. Idempotent."""
    import tempfile

    from django.core.files import File

    from bundles.blobstore import BlobStore

    with transaction.atomic():
        attempt = BuildAttempt.objects.select_for_update().filter(pk=attempt_id).first()
        if attempt is None or attempt.log_storage_key:
            return False
        if attempt.state in (AttemptState.ASSIGNED, AttemptState.RUNNING):
            return False
        store = BlobStore()
        key = attempt_log_storage_key(attempt)
        # Logs are capped (SWARM_BUILD_LOG_MAX_BYTES); spool to disk beyond 8 MiB.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            for data in attempt_log_iter(attempt):
                spool.write(data)
            spool.seek(0)
            if store.exists(key):
                store.delete(key)
            stored_key = store.storage.save(key, File(spool, name="log.txt"))
        attempt.log_storage_key = stored_key
        attempt.save(update_fields=["log_storage_key"])
        BuildLogChunk.objects.filter(attempt=attempt).delete()
    return True


def artifact_storage_key(*, build: Build, attempt_number: int, artifact_id: int, name: str) -> str:
    """Where an artifact's bytes live."""
    return f"builds/{build.pk}/attempts/{attempt_number}/artifacts/{artifact_id}/{name}"


def artifact_announce(*, build_id: int, drone, path: str, size: int, sha256: str,
                      attempt_number: int | None = None) -> Artifact:
    """Register an artifact the agent is about to upload (state `pending`)."""
    import posixpath

    from bundles.keys import is_sha256_hex

    build = _held_build(build_id, drone, attempt_number)
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        raise ApiError("path: must be a relative path inside the workspace", code="invalid", field="path")
    if not isinstance(size, int) or size < 0 or size > settings.SWARM_BUILD_ARTIFACT_MAX_BYTES:
        raise ApiError(f"size: must be between 0 and {settings.SWARM_BUILD_ARTIFACT_MAX_BYTES} bytes",
                       code="invalid", field="size")
    if not is_sha256_hex((sha256 or "").lower()):
        raise ApiError("sha256: must be a 64-character hex digest", code="invalid", field="sha256")
    attempt = BuildAttempt.objects.get(build=build, number=build.attempt_count)
    name = posixpath.basename(path)
    try:
        with transaction.atomic():
            artifact = Artifact.objects.create(build=build, attempt=attempt, name=name, path=path, size=size,
                                               sha256=sha256.lower(), storage_key="")
    except IntegrityError:
        artifact = Artifact.objects.get(attempt=attempt, path=path)
        if artifact.state == ArtifactState.STORED:
            raise Conflict(f"Artifact {path!r} is already stored for this attempt.", field="path")
        artifact.size, artifact.sha256 = size, sha256.lower()
    artifact.storage_key = artifact_storage_key(build=build, attempt_number=attempt.number,
                                                artifact_id=artifact.pk, name=name)
    artifact.save(update_fields=["storage_key", "size", "sha256"])
    return artifact


def artifact_store_stream(*, artifact: Artifact, stream, chunk_size: int = 1024 * 1024) -> Artifact:
    """Stream an artifact's bytes into storage, hashing as they go; a mismatch keeps nothing."""
    from bundles.blobstore import BlobStore

    store = BlobStore()
    writer = store.writer(known_key=None)
    digest = hashlib.sha256()
    size = 0
    try:
        while True:
            data = stream.read(chunk_size)
            if not data:
                break
            size += len(data)
            if size > artifact.size:
                raise ApiError(f"The upload is larger than the announced {artifact.size} bytes.",
                               code="size_mismatch")
            digest.update(data)
            writer.write(data)
        if size != artifact.size:
            raise ApiError(f"Received {size} bytes, announced {artifact.size}.", code="size_mismatch")
        if digest.hexdigest() != artifact.sha256:
            raise ApiError("The uploaded bytes do not match the announced sha256.", code="sha256_mismatch",
                           field="sha256")
        if store.exists(artifact.storage_key):
            store.delete(artifact.storage_key)
        writer.commit(artifact.storage_key)
    except BaseException:
        writer.abort()
        raise
    return _artifact_mark_stored(artifact)


def artifact_verify_stored(*, artifact: Artifact) -> Artifact:
    """After a presigned PUT straight to S3: read the object back and check size and sha256."""
    from bundles.blobstore import BlobStore

    store = BlobStore()
    if not store.exists(artifact.storage_key):
        raise ApiError("Nothing was uploaded for this artifact.", code="not_uploaded")
    digest = hashlib.sha256()
    size = 0
    with store.open(artifact.storage_key) as handle:
        while True:
            data = handle.read(1024 * 1024)
            if not data:
                break
            size += len(data)
            digest.update(data)
    if size != artifact.size or digest.hexdigest() != artifact.sha256:
        store.delete(artifact.storage_key)
        raise ApiError("The uploaded object does not match the announced size and sha256; it was removed.",
                       code="sha256_mismatch", field="sha256")
    return _artifact_mark_stored(artifact)


def _artifact_mark_stored(artifact: Artifact) -> Artifact:
    artifact.state = ArtifactState.STORED
    artifact.stored_at = timezone.now()
    artifact.save(update_fields=["state", "stored_at"])
    return artifact


def attempts_archive_pending(*, older_than_seconds: int = 60, limit: int = 200) -> int:
    """Archive logs of attempts that finished a while ago but still sit in chunks."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    attempt_ids = list(
        BuildAttempt.objects.filter(log_storage_key="", finished_at__lt=cutoff)
        .exclude(state__in=(AttemptState.ASSIGNED, AttemptState.RUNNING)).values_list("pk", flat=True)[:limit]
    )
    return sum(1 for attempt_id in attempt_ids if attempt_archive_log(attempt_id=attempt_id))
