"""Drone fleet models: drones, join tokens, hypervisors, the escalation history, fleet samples, terminal sessions."""
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from drones.choices import (
    NO_NEW_WORK_STATUSES,
    DroneSandbox,
    DroneStatus,
    DroneType,
    EscalationLevel,
    EscalationResult,
    ProvisioningStatus,
    TerminalState,
    TerminalTransport,
)
from swarm.core.secret_box import EncryptedTextField, plaintext_property


class Hypervisor(models.Model):
    """A Proxmox VE API endpoint that can reboot the containers/VMs drones run in (L3).

    The API token is `USER@REALM!TOKENID` plus its secret; the secret is stored
    encrypted (see swarm/core/secret_box.py).
    """

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(help_text="Base URL, e.g. https://pve.example.com:8006")  # scheme required
    token_id = models.CharField(max_length=200, help_text="USER@REALM!TOKENID")
    token_secret_encrypted = EncryptedTextField(blank=True, default="")
    verify_tls = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    token_secret = plaintext_property("token_secret_encrypted",
                                      "The decrypted API token secret (SecretUndecryptable when no key fits).")


class DroneQuerySet(models.QuerySet):
    """Scoping helpers for drones."""

    def escalating(self):
        """Drones somewhere on the ladder below critical."""
        return self.filter(escalation_level__gte=1, escalation_level__lt=EscalationLevel.ALERT_ADMIN)

    def critical(self):
        """Drones that reached L4 (a human was alerted)."""
        return self.filter(escalation_level=EscalationLevel.ALERT_ADMIN)

    def healthy(self):
        """Drones at L0."""
        return self.filter(escalation_level=EscalationLevel.HEALTHY)

    def with_labels(self, required_labels):
        """Drones whose labels include every one of `required_labels` (the fleet's one matching rule).

        Work — a build's `labels`, a drone-runtime execution's `required_labels` —
        goes only to a drone that has all of them; extra drone labels never hurt.
        The claim's side of the same rule is `labels_met_by()`.
        """
        return self.filter(labels__contains=list(required_labels or []))

    def taking_work(self):
        """Drones whose status lets them take new work (not paused, draining or offline)."""
        return self.exclude(status__in=NO_NEW_WORK_STATUSES)


def labels_met_by(drone_labels) -> dict:
    """A lookup for work rows (a `required_labels` JSON list) that a drone with `drone_labels` may run.

    The other side of `DroneQuerySet.with_labels()`: required ⊆ the drone's.
    """
    return {"required_labels__contained_by": list(drone_labels or [])}


class Drone(models.Model):
    """A machine that runs `swarm-agent run`: it heartbeats, answers pings and runs builds."""

    name = models.CharField(max_length=100, unique=True)
    hostname = models.CharField(max_length=255, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    drone_type = models.CharField(max_length=16, choices=DroneType.choices, default=DroneType.UNKNOWN)
    drone_type_locked = models.BooleanField(
        default=False, help_text="Set by an operator (set-type); the agent's detection no longer overrides it.")
    labels = models.JSONField(default=list, blank=True)
    capacity = models.PositiveIntegerField(default=1)
    # What the agent reports it can isolate builds with (drones/sandbox.py); `labels` carries it as
    # the implicit `sandbox:*` labels the claim matches against a job's required ones.
    sandbox = models.CharField(max_length=16, choices=DroneSandbox.choices, blank=True, default="",
                               help_text="Isolation the agent offers build steps, probed by running it.")
    sandbox_detail = models.CharField(max_length=300, blank=True, default="",
                                      help_text="What the agent's probe found (or the opt-out it was told).")
    sandbox_reported_at = models.DateTimeField(null=True, blank=True)
    # The container engine the agent runs a job's `image` with, reported with the sandbox; `labels` carries it
    # as the implicit `container:oci` and `container:<engine>` (drones/sandbox.py).
    container_engine = models.CharField(max_length=16, blank=True, default="",
                                        help_text="podman or docker when a real run of a local image worked; "
                                                  "empty: this drone runs no containers.")
    container_detail = models.CharField(max_length=300, blank=True, default="",
                                        help_text="What the agent's container probe found.")
    agent_version = models.CharField(max_length=64, blank=True, default="")
    os = models.CharField(max_length=64, blank=True, default="")
    arch = models.CharField(max_length=32, blank=True, default="")

    status = models.CharField(max_length=16, choices=DroneStatus.choices, default=DroneStatus.ONLINE, db_index=True)
    stop_requested = models.BooleanField(default=False, help_text="The next heartbeat answers action=stop.")
    registered_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True, help_text="Any agent call (HTTP or WebSocket).")
    # Not indexed on purpose, like last_seen_at and metrics: a heartbeat then
    # changes no indexed column, so PostgreSQL rewrites the row in place (a HOT
    # update, helped by the table's fillfactor) instead of adding an entry to
    # every index of the table on each of the fleet's heartbeats.
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    first_heartbeat_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)

    ws_connected = models.BooleanField(default=False)
    ws_connected_at = models.DateTimeField(null=True, blank=True)
    last_ping_at = models.DateTimeField(null=True, blank=True)
    last_pong_at = models.DateTimeField(null=True, blank=True)
    ping_latency_ms = models.FloatField(null=True, blank=True)
    missed_pongs = models.PositiveIntegerField(default=0)

    escalation_level = models.PositiveSmallIntegerField(
        choices=EscalationLevel.choices, default=EscalationLevel.HEALTHY, db_index=True)
    last_escalation_at = models.DateTimeField(null=True, blank=True)
    escalation_attempts = models.PositiveIntegerField(
        default=0, help_text="Actions taken at the current level (each repeat doubles the cooldown).")
    healthy_since = models.DateTimeField(null=True, blank=True)

    # L3: the container/VM this drone lives in.
    hypervisor = models.ForeignKey(Hypervisor, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="drones")
    hypervisor_node = models.CharField(max_length=100, blank=True, default="", help_text="Proxmox node name")
    hypervisor_vmid = models.PositiveIntegerField(null=True, blank=True, help_text="Proxmox CT/VM id")

    # L1/L2 fallback when the WebSocket is down.
    ssh_host = models.CharField(max_length=255, blank=True, default="")
    ssh_port = models.PositiveIntegerField(default=22)
    ssh_user = models.CharField(max_length=64, blank=True, default="root")
    ssh_key_path = models.CharField(max_length=500, blank=True, default="",
                                    help_text="Private key file readable by the Celery worker")
    ssh_known_hosts = models.TextField(blank=True, default="",
                                       help_text="known_hosts lines for this host; SSH refuses unknown keys")
    ssh_restart_command = models.CharField(max_length=500, blank=True, default="systemctl restart swarm-agent")
    ssh_hard_restart_command = models.CharField(
        max_length=500, blank=True, default="systemctl kill --signal=SIGKILL swarm-agent; systemctl restart swarm-agent")

    objects = DroneQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def ssh_configured(self) -> bool:
        """Whether L1/L2 can fall back to SSH."""
        return bool(self.ssh_host and self.ssh_known_hosts.strip())

    @property
    def hypervisor_configured(self) -> bool:
        """Whether L3 has a hypervisor, node and vmid to call."""
        return bool(self.hypervisor_id and self.hypervisor_node and self.hypervisor_vmid)


class JoinToken(models.Model):
    """A token a new machine presents once to register as a drone (hashed like API tokens)."""

    name = models.CharField(max_length=100, db_index=True)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    expires_at = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited")
    uses = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Encrypted (swarm/core/secret_box.py) so the admin can show the bootstrap command
    # again and `issue_join_token --reuse` can hand out the same token; lookups
    # still go through prefix + digest.
    plaintext_encrypted = EncryptedTextField(blank=True, default="")
    provisioning_status = models.CharField(max_length=16, choices=ProvisioningStatus.choices,
                                           default=ProvisioningStatus.ISSUED)
    script_fetched_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    first_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_drone = models.ForeignKey(Drone, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (swj_{self.prefix}_…)"

    plaintext = plaintext_property("plaintext_encrypted",
                                   "The token itself (SecretUndecryptable when no key decrypts it any more).")

    @property
    def is_usable(self) -> bool:
        """Not revoked, not expired and uses left."""
        if self.revoked_at is not None:
            return False
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return False
        return self.max_uses is None or self.uses < self.max_uses


class EscalationEvent(models.Model):
    """One step of the ladder (or its reset): what was done to which drone and how it went."""

    drone = models.ForeignKey(Drone, on_delete=models.CASCADE, related_name="escalation_events")
    level = models.PositiveSmallIntegerField(choices=EscalationLevel.choices)
    action = models.CharField(max_length=32)
    result = models.CharField(max_length=16, choices=EscalationResult.choices)
    detail = models.TextField(blank=True, default="")
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.drone} L{self.level} {self.action}: {self.result}"


class FleetSample(models.Model):
    """Every drone's state once a minute, for the topology's timeline scrubber (drones/topology/history.py).

    One row per minute for the whole fleet, in compact columns (`drones`:
    parallel lists `i` ids, `s` statuses, `p` ping latencies, `w` WebSocket up,
    `hb` seconds since the last heartbeat, `b` running builds) plus the
    minute's activity counts. Levels are not sampled: they are replayed from
    the escalation events, which are exact. Kept SWARM_TOPOLOGY_SAMPLE_RETENTION seconds.
    """

    at = models.DateTimeField(db_index=True)
    drones = models.JSONField(default=dict)
    activity = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"fleet sample at {self.at:%Y-%m-%d %H:%M:%S}"


class TerminalSession(models.Model):
    """One terminal on a drone — or a refused attempt at one: who, which drone, how, when, how much, the recording.

    Written by the server only (drones/terminal/); the browser can neither
    skip the row nor the recording.
    """

    Transport = TerminalTransport
    State = TerminalState

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    drone = models.ForeignKey(Drone, null=True, blank=True, on_delete=models.SET_NULL, related_name="terminal_sessions")
    drone_name = models.CharField(max_length=100, help_text="Kept when the drone is deleted.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    username = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.AGENT)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN, db_index=True)
    refused_reason = models.CharField(max_length=300, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True)
    exit_status = models.IntegerField(null=True, blank=True)
    bytes_in = models.BigIntegerField(default=0, help_text="Bytes typed or pasted into the terminal.")
    bytes_out = models.BigIntegerField(default=0, help_text="Bytes the terminal printed.")
    cols = models.PositiveSmallIntegerField(default=80)
    rows = models.PositiveSmallIntegerField(default=24)
    recording_sha256 = models.CharField(max_length=64, blank=True)
    recording_size = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-started_at"]
        permissions = [
            ("open_terminal", "Can open a terminal on a drone"),
            ("view_drone_syslog", "Can read a drone's system log"),
        ]

    def __str__(self) -> str:
        who = self.username or "someone"
        return f"terminal of {who} on {self.drone_name} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()
# Payload models live in their own module (drones/payloads/); importing them here registers them with the app.
from drones.payloads.models import (  # noqa: E402,F401
    DronePayloadState,
    PayloadEvent,
    PayloadType,
    PayloadVersion,
    Release,
    Rollout,
    RolloutTarget,
)
