"""Which drone holds a build: the check every agent call about one build starts with.

`DroneRef` is how the agent endpoints name the calling drone (by id, no row
load); `build_held_get` returns the build when that drone holds it in the
attempt the agent names. The agent's state calls (`builds.services.agent`),
log appends (`builds.services.logs`) and artifact uploads
(`builds.services.artifacts`) all go through it.
"""
from __future__ import annotations

from dataclasses import dataclass

from builds.models import Build
from swarm.core.errors import Conflict, NotFound


@dataclass(frozen=True)
class DroneRef:
    """A drone known by id only: what the agent endpoints pass to services (no row load per call)."""

    pk: int


def build_held_get(*, build_id: int, drone, attempt_number: int | None) -> Build:
    """The build if this drone holds it (in the named attempt, when given), else an error."""
    build = Build.objects.filter(pk=build_id).select_related("job").first()
    if build is None or build.drone_id != drone.pk:
        raise NotFound("No such build assigned to this drone.")
    if attempt_number is not None and attempt_number != build.attempt_count:
        raise Conflict(f"Attempt {attempt_number} is over; the build is on attempt {build.attempt_count}.",
                       code="attempt_superseded")
    return build
