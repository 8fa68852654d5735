"""Enumerations of the drone fleet."""
from django.db import models


class DroneType(models.TextChoices):
    """What kind of machine a drone is; decides whether L3 (reboot the container/VM) applies."""

    LXC = "lxc", "LXC container"
    QEMU = "qemu", "QEMU/KVM virtual machine"
    BARE_METAL = "bare-metal", "bare metal"
    UNKNOWN = "unknown", "unknown"


REBOOTABLE_TYPES = frozenset({DroneType.LXC, DroneType.QEMU})


class DroneStatus(models.TextChoices):
    """Liveness (online/stale/offline) or an operator's hold (paused/draining)."""

    ONLINE = "online", "online"
    STALE = "stale", "stale"
    OFFLINE = "offline", "offline"
    PAUSED = "paused", "paused"
    DRAINING = "draining", "draining"


#: Drone statuses that take no new work (builds, drone-runtime executions).
NO_NEW_WORK_STATUSES = (DroneStatus.PAUSED.value, DroneStatus.DRAINING.value, DroneStatus.OFFLINE.value)


class DroneAction(models.TextChoices):
    """What a heartbeat response tells the agent to do."""

    RUN = "run", "run"
    PAUSE = "pause", "pause"
    DRAIN = "drain", "drain"
    STOP = "stop", "stop"


class EscalationLevel(models.IntegerChoices):
    """The self-healing ladder; 0 is healthy."""

    HEALTHY = 0, "L0 healthy"
    RESTART_SERVICE = 1, "L1 restart_service"
    HARD_RESTART = 2, "L2 hard_restart"
    REBOOT_CONTAINER = 3, "L3 reboot_container"
    ALERT_ADMIN = 4, "L4 alert_admin"


LEVEL_ACTIONS = {
    EscalationLevel.RESTART_SERVICE: "restart_service",
    EscalationLevel.HARD_RESTART: "hard_restart",
    EscalationLevel.REBOOT_CONTAINER: "reboot_container",
    EscalationLevel.ALERT_ADMIN: "alert_admin",
}


class EscalationResult(models.TextChoices):
    """How one ladder step went."""

    SENT = "sent", "sent to the agent"
    OK = "ok", "done"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped"
    RESET = "reset", "reset"


class ProvisioningStatus(models.TextChoices):
    """How far a machine joining with a join token has come."""

    ISSUED = "issued", "token issued"
    SCRIPT_FETCHED = "script_fetched", "script fetched"
    REGISTERED = "registered", "registered"
    HEARTBEAT = "heartbeat", "first heartbeat"


class TerminalTransport(models.TextChoices):
    """How a terminal reaches its drone."""

    AGENT = "agent", "agent PTY over its WebSocket"
    SSH = "ssh", "SSH (pinned host key)"


class TerminalState(models.TextChoices):
    """A terminal session: refused before it opened, open, or closed (however it ended)."""

    REFUSED = "refused", "refused"
    OPEN = "open", "open"
    CLOSED = "closed", "closed"


class DroneSandbox(models.TextChoices):
    """The isolation a drone's agent reports it can give build steps (probed by running it)."""

    UNKNOWN = "", "not reported (agent too old, or not yet)"
    BUBBLEWRAP = "bubblewrap", "bubblewrap"
    NONE = "none", "none: unsandboxed by the operator's opt-in"
    UNAVAILABLE = "unavailable", "unavailable: takes no builds"
