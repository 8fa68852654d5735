"""The sandbox a drone offers its builds: what the agent reports, and the implicit labels the claim matches.

The agent probes its isolation for real (bubblewrap run once) and reports
`{"mode": "bubblewrap" | "none" | "unavailable", "detail": "..."}` at
registration and in a heartbeat (the first after it starts, and after any
change). The drone then carries implicit labels, set here and nowhere else:

* `bubblewrap` → `sandbox:bubblewrap` and `sandbox:none` (it can sandbox, and
  runs a job that needs no sandbox too: sandboxed anyway);
* `none` (the operator's opt-out, SWARM_AGENT_BUILD_SANDBOX=none) → `sandbox:none`;
* `unavailable`, or never reported → none: the drone takes no build that
  runs on the host.

The same report carries `containers: {"engine": "podman" | "docker" | "",
"detail": "..."}`, what the agent found when it imported and ran a tiny local
image for real. A working engine gives `container:oci` (any engine: what a
job with an `image` requires) and `container:<engine>`; none gives no
`container:*` label, so no job with an `image` reaches that drone.

A job requires `sandbox:<its build_config.sandbox>` (builds.config, default
`bubblewrap`), so the existing label match of the claim (job labels ⊆ drone
labels) is what keeps an unsandboxed drone from a job that needs a sandbox.
A job with an `image` requires `container:oci` instead (the container is its
isolation). Labels starting with `sandbox:` or `container:` are the control
plane's: an agent or an operator cannot set them.
"""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from drones.choices import DroneSandbox
from drones.models import Drone
from drones.protocol import CONTAINER_LABEL, SandboxReport, parse_sandbox_report
from swarm.core.errors import ApiError

LABEL_PREFIX = "sandbox:"
CONTAINER_LABEL_PREFIX = "container:"
RESERVED_PREFIXES = (LABEL_PREFIX, CONTAINER_LABEL_PREFIX)
_IMPLICIT = {
    DroneSandbox.BUBBLEWRAP: ("sandbox:bubblewrap", "sandbox:none"),
    DroneSandbox.NONE: ("sandbox:none",),
}


def sandbox_labels(mode: str, *, container_engine: str = "") -> list[str]:
    """The implicit labels a drone offering `mode` (and running images with `container_engine`) carries."""
    labels = list(_IMPLICIT.get(mode, ()))
    if container_engine:
        labels += [CONTAINER_LABEL, f"{CONTAINER_LABEL_PREFIX}{container_engine}"]
    return labels


def labels_with_sandbox(labels, mode: str, *, container_engine: str = "") -> list[str]:
    """A drone's own labels (any `sandbox:*`/`container:*` dropped) plus the implicit ones it offers, sorted."""
    own = {label for label in labels or [] if not str(label).startswith(RESERVED_PREFIXES)}
    return sorted(own | set(sandbox_labels(mode, container_engine=container_engine)))


def reserved_label_problem(labels) -> str | None:
    """Why a label list an agent or operator sends is refused (it names a `sandbox:`/`container:` label), or None."""
    reserved = sorted(label for label in labels or [] if str(label).startswith(RESERVED_PREFIXES))
    if reserved:
        return (f"{reserved[0]!r}: labels starting with {' or '.join(map(repr, RESERVED_PREFIXES))} are set by the "
                "control plane from the sandbox and container engine the agent reports (send them as `sandbox`); "
                "remove it from the labels")
    return None


def apply_sandbox(drone: Drone, *, report: SandboxReport) -> None:
    """Set a drone's sandbox, container engine and their implicit labels on the instance (the caller saves)."""
    drone.sandbox, drone.sandbox_detail = report.mode, report.detail
    drone.container_engine, drone.container_detail = report.container_engine, report.container_detail
    drone.sandbox_reported_at = timezone.now()
    drone.labels = labels_with_sandbox(drone.labels, report.mode, container_engine=report.container_engine)


def drone_sandbox_record(*, drone_id: int, report) -> bool:
    """Record the sandbox a heartbeat reports; True when the drone's record changed."""
    report = parse_sandbox_report(report)
    with transaction.atomic():
        drone = Drone.objects.select_for_update().only(
            "pk", "labels", "sandbox", "sandbox_detail", "container_engine", "container_detail").filter(
            pk=drone_id).first()
        if drone is None:
            return False
        changed = (drone.sandbox, drone.sandbox_detail, drone.container_engine, drone.container_detail) != \
            tuple(report) or drone.labels != labels_with_sandbox(drone.labels, report.mode,
                                                                 container_engine=report.container_engine)
        apply_sandbox(drone, report=report)
        drone.save(update_fields=["sandbox", "sandbox_detail", "container_engine", "container_detail",
                                  "sandbox_reported_at", "labels"])
    return changed


def sandbox_on_heartbeat(drone_id: int, body: dict) -> dict | None:
    """Heartbeat hook: a heartbeat carrying `sandbox` records it (the agent sends it only when it changed)."""
    drone_sandbox_record(drone_id=drone_id, report=body.get("sandbox"))
    return {"sandbox_recorded": True}


def register() -> None:
    """Take part in heartbeats that carry `sandbox` (Django's view answers those: they are rare)."""
    from drones.services.heartbeat import register_heartbeat_hook

    register_heartbeat_hook(name="sandbox", hook=sandbox_on_heartbeat, fields=("sandbox",))
