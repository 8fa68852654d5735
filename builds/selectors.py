"""Reads of the builds app, always scoped by the caller's principal (another tenant's object is a 404)."""
from __future__ import annotations

from builds.choices import ACTIVE_STATES, BuildState
from builds.models import Artifact, Build, BuildAttempt, Job
from swarm.core.errors import ApiError, NotFound
from swarm.core.inputs import MAX_INT32, MAX_INT64, parse_int


def _is_id(value) -> bool:
    """Whether request text names an object by id (ASCII digits that fit a bigint), not by name."""
    text = str(value)
    return text.isascii() and text.isdigit() and int(text) <= MAX_INT64


def job_list(principal):
    """Jobs the principal may see."""
    return Job.objects.for_principal(principal).select_related("queue", "tenant")


def job_get(principal, job_id) -> Job:
    """One visible job by id (or by name when `job_id` is not a number), else 404."""
    jobs = job_list(principal)
    job = jobs.filter(pk=int(job_id)).first() if _is_id(job_id) else None
    if job is None and not _is_id(job_id):
        matches = list(jobs.filter(name=str(job_id))[:2])
        if len(matches) > 1:
            raise ApiError(f"Several jobs are named {job_id!r}; use the id.", code="ambiguous", field="job")
        job = matches[0] if matches else None
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


def build_list(principal, *, job=None, state=None, drone=None):
    """Visible builds, newest first, optionally filtered by job id/name, state and drone id/name."""
    builds = Build.objects.for_principal(principal).select_related("job", "drone", "queue")
    if job:
        builds = builds.filter(job_id=int(job)) if _is_id(job) else builds.filter(job__name=job)
    if state:
        states = [s for s in str(state).split(",") if s]
        unknown = [s for s in states if s not in BuildState.values]
        if unknown:
            raise ApiError(f"state: unknown state {unknown[0]!r}; expected one of {', '.join(BuildState.values)}",
                           code="invalid", field="state")
        builds = builds.filter(state__in=states)
    if drone:
        builds = builds.filter(drone_id=int(drone)) if _is_id(drone) else builds.filter(drone__name=drone)
    return builds


def build_get(principal, build_id) -> Build:
    """One visible build, else 404."""
    if not _is_id(build_id):
        raise NotFound(f"No build {build_id}.")
    build = Build.objects.for_principal(principal).select_related("job", "drone", "queue").filter(
        pk=int(build_id)).first()
    if build is None:
        raise NotFound(f"No build {build_id}.")
    return build


def build_attempt_get(build: Build, number=None) -> BuildAttempt | None:
    """The numbered attempt of a build (default: the latest), or None before the first claim."""
    if number in (None, ""):
        return build.attempts.order_by("-number").first()
    number = parse_int(number, field="attempt", minimum=1, maximum=MAX_INT32)
    attempt = build.attempts.filter(number=number).first()
    if attempt is None:
        raise NotFound(f"Build {build.pk} has no attempt {number}.")
    return attempt


def build_artifacts(build: Build):
    """Stored artifacts of a build, every attempt."""
    from builds.choices import ArtifactState

    return Artifact.objects.filter(build=build, state=ArtifactState.STORED).select_related("attempt")


def drone_canceling_build_ids(drone_id: int) -> list[int]:
    """Builds this drone holds that must stop."""
    return list(Build.objects.filter(drone_id=drone_id, state=BuildState.CANCELING).values_list("pk", flat=True))


def drone_held_build_ids(drone_id: int) -> list[int]:
    """Builds this drone holds."""
    return list(Build.objects.filter(drone_id=drone_id, state__in=ACTIVE_STATES).values_list("pk", flat=True))
