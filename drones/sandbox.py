"""The sandbox a drone offers its builds: what the agent reports, and the implicit labels the claim matches.

The agent probes its isolation for real (bubblewrap run once) and reports
`{"mode": "bubblewrap" | "none" | "unavailable", "detail": "..."}` at
registration and in a heartbeat (the first after it starts, and after any
change). The drone then carries implicit labels, set here and nowhere else:

* `bubblewrap` → `sandbox:bubblewrap` and `sandbox:none` (it can sandbox, and
  runs a job that needs no sandbox too: sandboxed anyway);
* `none` (the operator's opt-out, SWARM_AGENT_BUILD_SANDBOX=none) → `sandbox:none`;
* `unavailable`, or never reported → none: the drone takes no build.

A job requires `sandbox:<its build_config.sandbox>` (builds.config, default
`bubblewrap`), so the existing label match of the claim (job labels ⊆ drone
labels) is what keeps an unsandboxed drone from a job that needs a sandbox.
Labels starting with `sandbox:` are the control plane's: an agent or an
operator cannot set them.
"""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from drones.choices import DroneSandbox
from drones.models import Drone
from drones.protocol import parse_sandbox_report
from swarm.core.errors import ApiError

LABEL_PREFIX = "sandbox:"
_IMPLICIT = {
    DroneSandbox.BUBBLEWRAP: ("sandbox:bubblewrap", "sandbox:none"),
    DroneSandbox.NONE: ("sandbox:none",),
}


def sandbox_labels(mode: str) -> list[str]:
    """The implicit labels a drone offering `mode` carries."""
    return list(_IMPLICIT.get(mode, ()))


def labels_with_sandbox(labels, mode: str) -> list[str]:
    """A drone's own labels (any `sandbox:*` dropped) plus the implicit ones of its sandbox, sorted."""
    own = {label for label in labels or [] if not str(label).startswith(LABEL_PREFIX)}
    return sorted(own | set(sandbox_labels(mode)))


def reserved_label_problem(labels) -> str | None:
    """Why a label list an agent or operator sends is refused (it names a `sandbox:` label), or None."""
    reserved = sorted(label for label in labels or [] if str(label).startswith(LABEL_PREFIX))
    if reserved:
        return (f"{reserved[0]!r}: labels starting with {LABEL_PREFIX!r} are set by the control plane from the "
                "sandbox the agent reports (send it as `sandbox`); remove it from the labels")
    return None


def apply_sandbox(drone: Drone, *, mode: str, detail: str) -> None:
    """Set a drone's sandbox and its implicit labels on the instance (the caller saves)."""
    drone.sandbox, drone.sandbox_detail = mode, detail
    drone.sandbox_reported_at = timezone.now()
    drone.labels = labels_with_sandbox(drone.labels, mode)


def drone_sandbox_record(*, drone_id: int, report) -> bool:
    """Record the sandbox a heartbeat reports; True when the drone's record changed."""
    mode, detail = parse_sandbox_report(report)
    with transaction.atomic():
        drone = Drone.objects.select_for_update().only("pk", "labels", "sandbox", "sandbox_detail").filter(
            pk=drone_id).first()
        if drone is None:
            return False
        changed = (drone.sandbox, drone.sandbox_detail) != (mode, detail) or \
            drone.labels != labels_with_sandbox(drone.labels, mode)
        apply_sandbox(drone, mode=mode, detail=detail)
        drone.save(update_fields=["sandbox", "sandbox_detail", "sandbox_reported_at", "labels"])
    return changed


def sandbox_on_heartbeat(drone_id: int, body: dict) -> dict | None:
    """Heartbeat hook: a heartbeat carrying `sandbox` records it (the agent sends it only when it changed)."""
    drone_sandbox_record(drone_id=drone_id, report=body.get("sandbox"))
    return {"sandbox_recorded": True}


def register() -> None:
    """Take part in heartbeats that carry `sandbox` (Django's view answers those: they are rare)."""
    from drones.services.heartbeat import register_heartbeat_hook

    register_heartbeat_hook(name="sandbox", hook=sandbox_on_heartbeat, fields=("sandbox",))
