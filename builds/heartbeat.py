"""What builds add to the drone heartbeat: lease renewal and the list of builds to cancel."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from builds.choices import BuildState
from builds.models import Build
from builds.selectors import drone_canceling_build_ids


def builds_on_heartbeat(drone_id: int, body: dict) -> dict | None:
    """Renew leases of the builds the agent says it runs; answer the ones it must cancel.

    The agent can only stop builds it runs (it ignores other ids), so an idle
    drone's heartbeat costs no query here, and a busy one's looks only at the
    builds it reported.
    """
    running = [int(pk) for pk in body.get("running_build_ids") or [] if str(pk).isdigit()]
    if not running:
        return None
    until = timezone.now() + timedelta(seconds=settings.SWARM_BUILD_LEASE_SECONDS)
    renewed = Build.objects.filter(pk__in=running, drone_id=drone_id,
                                   state__in=(BuildState.RUNNING, BuildState.CANCELING)).update(lease_expires_at=until)
    if not renewed:
        return None
    canceling = drone_canceling_build_ids(drone_id, among=running)
    return {"cancel_build_ids": canceling} if canceling else None


def register() -> None:
    """Hook into the drones app's heartbeat (when it offers hooks)."""
    try:
        from drones.heartbeat_hooks import register_heartbeat_hook
    except ImportError:  # the drones app predates heartbeat hooks
        return
    register_heartbeat_hook("builds", builds_on_heartbeat)
