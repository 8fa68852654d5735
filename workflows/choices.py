"""Enumerations of the workflow registry."""
from django.db import models


class Runtime(models.TextChoices):
    """How the boot script runs a workflow's entrypoint."""

    NODE20 = "node20", "Node.js 20"
    PYTHON311 = "python311", "Python 3.11"
    CUSTOM = "custom", "Custom executable"


class ExecutionStatus(models.TextChoices):
    """Where an execution is in its life; the last four are terminal.

    `queued` is the drone runtime's wait for a drone to claim the execution.
    """

    PENDING = "pending", "pending"
    QUEUED = "queued", "queued"
    PROVISIONING = "provisioning", "provisioning"
    BOOTING = "booting", "booting"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"
    TIMED_OUT = "timed_out", "timed out"


TERMINAL_STATUSES = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED, ExecutionStatus.TIMED_OUT}
)

# Forward order of the live statuses; a transition never moves backwards and
# never leaves a terminal status.
STATUS_ORDER = {
    ExecutionStatus.PENDING: 0,
    ExecutionStatus.QUEUED: 1,
    ExecutionStatus.PROVISIONING: 2,
    ExecutionStatus.BOOTING: 3,
    ExecutionStatus.RUNNING: 4,
    ExecutionStatus.SUCCEEDED: 5,
    ExecutionStatus.FAILED: 5,
    ExecutionStatus.CANCELLED: 5,
    ExecutionStatus.TIMED_OUT: 5,
}


class ExecutionEventType(models.TextChoices):
    """Typed entries of an execution's append-only event stream."""

    SPAWN_REQUESTED = "spawn_requested", "spawn requested"
    # The drone runtime: waiting for a drone (the reason names the labels and the drones connected).
    QUEUED = "queued", "queued"
    RUNTIME_STARTED = "runtime_started", "runtime started"
    METADATA_SERVED = "metadata_served", "metadata served"
    BUNDLE_CACHE_HIT = "bundle_cache_hit", "bundle cache hit"
    BUNDLE_CACHE_MISS = "bundle_cache_miss", "bundle cache miss"
    BUNDLE_FETCHED = "bundle_fetched", "bundle fetched"
    BUNDLE_VERIFIED = "bundle_verified", "bundle verified"
    UNPACKED = "unpacked", "unpacked"
    STARTED = "started", "started"
    OUTPUT = "output", "output"
    EXITED = "exited", "exited"
    CANCEL_REQUESTED = "cancel_requested", "cancel requested"
    TIMED_OUT = "timed_out", "timed out"
    ERROR = "error", "error"
    # Written by a local runtime's supervisor when its sandbox or VM has exited (console tail, timeline).
    RUNTIME_EXITED = "runtime_exited", "runtime exited"


# What the boot script (holding an execution token) may report; the rest are
# written by the control plane itself.
BOOT_REPORTED_EVENTS = frozenset({
    ExecutionEventType.BUNDLE_CACHE_HIT, ExecutionEventType.BUNDLE_CACHE_MISS, ExecutionEventType.BUNDLE_FETCHED,
    ExecutionEventType.BUNDLE_VERIFIED, ExecutionEventType.UNPACKED, ExecutionEventType.STARTED,
    ExecutionEventType.OUTPUT, ExecutionEventType.EXITED, ExecutionEventType.ERROR,
})


class OutputStream(models.TextChoices):
    """Which stream an output line came from."""

    STDOUT = "stdout", "stdout"
    STDERR = "stderr", "stderr"
