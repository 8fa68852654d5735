"""Payload types and versions, releases, per-drone payload state, rollouts and their event log.

Re-exported from `drones.models` (Django finds them as models of the drones app).
"""
from __future__ import annotations

from django.db import models
from django.utils import timezone

from drones.payloads.choices import (
    HealthCheckKind,
    PayloadEventKind,
    RevertState,
    RolloutState,
    TargetState,
)


class PayloadType(models.Model):
    """A kind of payload: where it installs on a drone, how it is checked, whether it restarts the agent."""

    name = models.SlugField(max_length=64, unique=True, help_text="e.g. swarm-agent, portage-config, toolchain")
    description = models.TextField(blank=True, default="")
    install_root = models.CharField(
        max_length=500, blank=True, default="",
        help_text="Directory on the drone holding releases/<sha256>/ and current; empty: <agent payload root>/<name>")
    health_check = models.CharField(max_length=16, choices=HealthCheckKind.choices, default=HealthCheckKind.NONE)
    health_command = models.CharField(max_length=1000, blank=True, default="",
                                      help_text="Run in the new release's directory; exit 0 means healthy")
    health_url = models.CharField(max_length=500, blank=True, default="", help_text="GET must answer 2xx")
    health_timeout = models.FloatField(default=30.0, help_text="Seconds the health check may take")
    restarts_agent = models.BooleanField(default=False, help_text="Applying it restarts the agent (swarm-agent)")
    keep_releases = models.PositiveSmallIntegerField(default=3, help_text="Releases kept on the drone (≥ 2)")
    auto_reconcile = models.BooleanField(
        default=False, help_text="Drift on this type starts a reconcile rollout to the desired version")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def health_spec(self) -> dict:
        """The health check as the agent receives it in `deploy_payload`."""
        return {"kind": self.health_check, "command": self.health_command, "url": self.health_url,
                "timeout": self.health_timeout}


class PayloadVersion(models.Model):
    """One immutable version of a payload type; its content is a bundle (the same bytes stored once)."""

    payload_type = models.ForeignKey(PayloadType, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=64, help_text="semver or vYYYY.MM.DD[.N]")
    bundle = models.ForeignKey("bundles.Bundle", on_delete=models.PROTECT, related_name="payload_versions")
    notes = models.TextField(blank=True, default="")
    created_by = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["payload_type__name", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["payload_type", "version"], name="payload_version_label_unique"),
            models.UniqueConstraint(fields=["payload_type", "bundle"], name="payload_version_bytes_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.payload_type.name}={self.version}"

    @property
    def sha256(self) -> str:
        return self.bundle.sha256


class Release(models.Model):
    """An immutable manifest of payload versions: the fleet's whole desired state in one row."""

    name = models.CharField(max_length=32, unique=True, help_text="vYYYY.MM.DD[.N]")
    payload_versions = models.ManyToManyField(PayloadVersion, related_name="releases")
    manifest = models.JSONField(help_text="Canonical manifest (see drones.payloads.services.release_manifest)")
    manifest_sha256 = models.CharField(max_length=64, unique=True)
    notes = models.TextField(blank=True, default="")
    created_by = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class DronePayloadState(models.Model):
    """Per drone and payload type: the desired version and the hash the drone last reported."""

    drone = models.ForeignKey("drones.Drone", on_delete=models.CASCADE, related_name="payload_states")
    payload_type = models.ForeignKey(PayloadType, on_delete=models.CASCADE, related_name="drone_states")
    desired_version = models.ForeignKey(PayloadVersion, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    reported_sha256 = models.CharField(max_length=64, blank=True, default="")
    reported_at = models.DateTimeField(null=True, blank=True)
    drifted = models.BooleanField(default=False)
    drift_since = models.DateTimeField(null=True, blank=True)
    drift_detail = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["drone__name", "payload_type__name"]
        constraints = [models.UniqueConstraint(fields=["drone", "payload_type"], name="drone_payload_state_unique")]
        indexes = [models.Index(fields=["drifted"], name="drone_payload_drifted",
                                condition=models.Q(drifted=True))]

    def __str__(self) -> str:
        return f"{self.drone_id}/{self.payload_type_id}"


class Rollout(models.Model):
    """Moves a set of drones to a payload version or a release (Nomad's `update` block, resumable)."""

    release = models.ForeignKey(Release, null=True, blank=True, on_delete=models.PROTECT, related_name="rollouts")
    payload_version = models.ForeignKey(PayloadVersion, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="rollouts")
    target_all = models.BooleanField(default=False)
    target_labels = models.JSONField(default=list, blank=True)
    target_names = models.JSONField(default=list, blank=True)

    max_parallel = models.PositiveIntegerField(default=1)
    canary = models.PositiveIntegerField(default=0)
    min_healthy_time = models.FloatField(default=10.0)
    healthy_deadline = models.FloatField(default=300.0)
    progress_deadline = models.FloatField(default=600.0)
    auto_revert = models.BooleanField(default=False)
    auto_promote = models.BooleanField(default=False)
    failure_budget = models.PositiveIntegerField(default=0, help_text="Failed drones tolerated (absolute or %)")
    failure_budget_is_percent = models.BooleanField(default=False)
    is_reconcile = models.BooleanField(default=False)

    state = models.CharField(max_length=20, choices=RolloutState.choices, default=RolloutState.PENDING,
                             db_index=True)
    state_reason = models.CharField(max_length=300, blank=True, default="")
    promoted_at = models.DateTimeField(null=True, blank=True)
    revert_of_state = models.CharField(max_length=20, blank=True, default="",
                                       help_text="Why the rollout is reverting (the state it would have ended in)")
    created_by = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_progress_at = models.DateTimeField(null=True, blank=True)
    ticks = models.PositiveIntegerField(default=0, help_text="Times the engine advanced it")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"rollout {self.pk} ({self.subject_label})"

    @property
    def subject_label(self) -> str:
        if self.release_id:
            return f"release {self.release.name}"
        if self.payload_version_id:
            return str(self.payload_version)
        return "—"

    @property
    def is_finished(self) -> bool:
        return self.state in {RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.REVERTED,
                              RolloutState.ABORTED}


class RolloutTarget(models.Model):
    """One drone and payload type of a rollout, with its Mender-style state."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="targets")
    drone = models.ForeignKey("drones.Drone", on_delete=models.CASCADE, related_name="rollout_targets")
    payload_version = models.ForeignKey(PayloadVersion, on_delete=models.PROTECT, related_name="+")
    previous_version = models.ForeignKey(PayloadVersion, null=True, blank=True, on_delete=models.SET_NULL,
                                         related_name="+")
    previous_sha256 = models.CharField(max_length=64, blank=True, default="")
    position = models.PositiveIntegerField(help_text="Order of the drone in the rollout (canaries first)")
    is_canary = models.BooleanField(default=False)
    state = models.CharField(max_length=20, choices=TargetState.choices, default=TargetState.PENDING)
    reason = models.CharField(max_length=500, blank=True, default="")
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatches = models.PositiveSmallIntegerField(default=0)
    state_changed_at = models.DateTimeField(default=timezone.now)
    healthy_at = models.DateTimeField(null=True, blank=True, help_text="The agent reported it healthy")
    revert_state = models.CharField(max_length=10, choices=RevertState.choices, blank=True, default="")

    class Meta:
        ordering = ["rollout", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["rollout", "drone", "payload_version"],
                                               name="rollout_target_unique")]
        indexes = [models.Index(fields=["rollout", "state"], name="rollout_target_state")]

    def __str__(self) -> str:
        return f"{self.rollout_id}/{self.drone_id}: {self.state}"

    @property
    def payload_type_id(self) -> int:
        return self.payload_version.payload_type_id


class PayloadEvent(models.Model):
    """Every state change of a rollout, a drone's deploy, drift and reconcile (the deploy log)."""

    kind = models.CharField(max_length=16, choices=PayloadEventKind.choices)
    rollout = models.ForeignKey(Rollout, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    target = models.ForeignKey(RolloutTarget, null=True, blank=True, on_delete=models.CASCADE,
                               related_name="events")
    drone = models.ForeignKey("drones.Drone", null=True, blank=True, on_delete=models.CASCADE,
                              related_name="payload_events")
    payload_type = models.ForeignKey(PayloadType, null=True, blank=True, on_delete=models.CASCADE,
                                     related_name="events")
    from_state = models.CharField(max_length=20, blank=True, default="")
    to_state = models.CharField(max_length=20, blank=True, default="")
    detail = models.CharField(max_length=1000, blank=True, default="")
    actor = models.CharField(max_length=200, blank=True, default="")
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.from_state}→{self.to_state}"
