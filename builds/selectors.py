"""Reads of the builds app, scoped by the caller's principal (tenancy.scope): another tenant's object is a 404."""
from __future__ import annotations

from urllib.parse import quote

from django.db.models import QuerySet

from builds.choices import ACTIVE_STATES, BuildState
from builds.models import Artifact, Build, BuildAttempt, Job
from drones.protocol import CONTAINER_LABEL
from swarm.core.errors import ApiError, NotFound
from swarm.core.inputs import MAX_INT32, MAX_INT64, parse_int

API_ROOT = "/api/v1"
#: An `ambiguous` answer names at most this many of the matching jobs' URLs.
AMBIGUOUS_URLS_SHOWN = 10


def is_id(value) -> bool:
    """Whether request text names an object by id (ASCII digits that fit a bigint), not by name."""
    text = str(value)
    return text.isascii() and text.isdigit() and int(text) <= MAX_INT64


def job_rows() -> QuerySet[Job]:
    """Jobs with what their serializer shows (not yet scoped)."""
    return Job.objects.select_related("queue", "tenant")


def job_list(principal) -> QuerySet[Job]:
    """Jobs the principal may see."""
    return job_rows().visible_to(principal)


def job_url(job: Job) -> str:
    """The URL naming `job` without ambiguity: by tenant and name, or by id for a job without a tenant."""
    if job.tenant_id is None:
        return f"{API_ROOT}/jobs/{job.pk}"
    return f"{API_ROOT}/tenants/{quote(job.tenant.slug)}/jobs/{quote(job.name)}"


def job_resolve(jobs: QuerySet[Job], job_id) -> Job:
    """One of `jobs` by id, or by name when `job_id` is not a number; else 404.

    Names are unique per tenant, so for a principal that sees several tenants
    a name may match several jobs: that is a 400 `ambiguous` whose detail
    names the URL of each match (`/tenants/<slug>/jobs/<name>`, or
    `/jobs/<id>` for a job without a tenant). A tenant-bound principal sees
    one tenant's jobs, so its names never clash.
    """
    if is_id(job_id):
        job = jobs.filter(pk=int(job_id)).first()
    else:
        matches = list(jobs.filter(name=str(job_id)).select_related("tenant").order_by("tenant__slug", "pk"))
        if len(matches) > 1:
            urls = ", ".join(job_url(match) for match in matches[:AMBIGUOUS_URLS_SHOWN])
            if len(matches) > AMBIGUOUS_URLS_SHOWN:
                urls += f" and {len(matches) - AMBIGUOUS_URLS_SHOWN} more"
            raise ApiError(f"Several jobs are named {job_id!r}; name one by its tenant (or id): {urls}.",
                           code="ambiguous", field="job")
        job = matches[0] if matches else None
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


def job_get(principal, job_id) -> Job:
    """One visible job by id (or by name when `job_id` is not a number), else 404; see `job_resolve`."""
    return job_resolve(job_list(principal), job_id)


def job_get_by_name(principal, *, tenant_slug: str, name: str) -> Job:
    """A visible job by `tenant/name` (never ambiguous), else 404."""
    job = job_list(principal).filter(tenant__slug=tenant_slug, name=name).first()
    if job is None:
        raise NotFound(f"No job {tenant_slug}/{name}.")
    return job


def build_rows() -> QuerySet[Build]:
    """Builds with what their serializers show, newest first (not yet scoped)."""
    return Build.objects.select_related("job", "drone", "queue")


def build_get(principal, build_id) -> Build:
    """One visible build, else 404."""
    if not is_id(build_id):
        raise NotFound(f"No build {build_id}.")
    build = build_rows().visible_to(principal).filter(pk=int(build_id)).first()
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


def drones_taking_work() -> list[tuple[list[str], str, str]]:
    """(labels, sandbox, container detail) of every drone that takes new builds: one query, for
    `build_waiting_reason`."""
    from drones.models import Drone

    from builds.choices import NO_NEW_WORK_STATUSES

    return [(list(labels or []), sandbox, container_detail) for labels, sandbox, container_detail in
            Drone.objects.exclude(status__in=NO_NEW_WORK_STATUSES).values_list("labels", "sandbox",
                                                                               "container_detail")]


def build_waiting_reason(build: Build, *, fleet: list[tuple[list[str], str, str]] | None = None) -> str | None:
    """Why a pending build waits although it is queued: no drone that takes new work carries its labels.

    None while some drone could take it (it then waits only for a free slot),
    and for any build that is not pending. The reason names the labels no
    drone offers, and for a sandbox or container requirement what the fleet reports.
    `fleet` is `drones_taking_work()`, read once for a whole list of builds.
    """
    from drones.choices import DroneSandbox

    if build.state != BuildState.PENDING:
        return None
    fleet = drones_taking_work() if fleet is None else fleet
    required = set(build.required_labels or [])
    if any(required <= set(labels) for labels, _, _ in fleet):
        return None
    if not fleet:
        return "no drone is online to take new builds"
    offered = {label for labels, _, _ in fleet for label in labels}
    missing = sorted(required - offered)
    if not missing:
        return f"no single drone carries all of its labels ({', '.join(sorted(required))})"
    reason = f"no drone offers {', '.join(missing)}"
    if any(label.startswith("sandbox:") for label in missing):
        counts = {choice.label: sum(1 for _, sandbox, _ in fleet if sandbox == choice.value)
                  for choice in DroneSandbox}
        reported = ", ".join(f"{count} {label}" for label, count in counts.items() if count)
        reason += (f" (sandboxes the drones report: {reported}); a drone offers sandbox:bubblewrap when bwrap "
                   "works there, and sandbox:none too, or only when SWARM_AGENT_BUILD_SANDBOX=none opts it out")
    if CONTAINER_LABEL in missing:
        details = sorted({detail for _, _, detail in fleet if detail})
        reason += (f" (its image runs only on a drone whose agent ran a container for real: podman, or docker, "
                   f"working there; the drones report: {'; '.join(details)[:400] if details else 'nothing'})")
    return reason
