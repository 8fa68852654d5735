"""Enumerations of payloads and rollouts (DESIGN.md § Payloads, releases and rollouts)."""
from django.db import models


class HealthCheckKind(models.TextChoices):
    """How a drone decides that a freshly switched payload works."""

    NONE = "none", "none"
    COMMAND = "command", "a command (exit 0, within the timeout)"
    HTTP = "http", "an HTTP URL answering 2xx"
    AGENT_PROBE = "agent_probe", "the agent's own probe (import, config, reach the control plane)"


class RolloutState(models.TextChoices):
    """pending → running ⇄ paused → (awaiting_promotion) → succeeded | failed | reverted | aborted."""

    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    AWAITING_PROMOTION = "awaiting_promotion", "awaiting promotion"
    REVERTING = "reverting", "reverting"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    REVERTED = "reverted", "reverted"
    ABORTED = "aborted", "aborted"


ACTIVE_ROLLOUT_STATES = frozenset({RolloutState.PENDING, RolloutState.RUNNING, RolloutState.PAUSED,
                                   RolloutState.AWAITING_PROMOTION, RolloutState.REVERTING})
FINISHED_ROLLOUT_STATES = frozenset({RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.REVERTED,
                                     RolloutState.ABORTED})


class TargetState(models.TextChoices):
    """Mender-style per-drone deployment states (one row per rollout, drone and payload type)."""

    PENDING = "pending", "pending"
    DOWNLOADING = "downloading", "downloading"
    INSTALLING = "installing", "installing"
    VERIFYING = "verifying", "verifying"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    ALREADY_INSTALLED = "already_installed", "already installed"
    SKIPPED = "skipped", "skipped"
    REVERTED = "reverted", "reverted"


# A target the agent is working on (or was told to): counts against max_parallel.
IN_FLIGHT_TARGET_STATES = frozenset({TargetState.DOWNLOADING, TargetState.INSTALLING, TargetState.VERIFYING})
DONE_TARGET_STATES = frozenset({TargetState.SUCCEEDED, TargetState.FAILED, TargetState.ALREADY_INSTALLED,
                                TargetState.SKIPPED, TargetState.REVERTED})
# What an agent may report, in the order a deploy goes through them.
AGENT_REPORT_ORDER = {TargetState.DOWNLOADING: 1, TargetState.INSTALLING: 2, TargetState.VERIFYING: 3,
                      TargetState.SUCCEEDED: 4, TargetState.FAILED: 4}


class RevertState(models.TextChoices):
    """Where a target stands in a revert of its rollout."""

    NONE = "", "—"
    PENDING = "pending", "pending"
    SENT = "sent", "sent"
    DONE = "done", "done"
    FAILED = "failed", "failed"


class PayloadEventKind(models.TextChoices):
    """What a payload event row records."""

    ROLLOUT = "rollout", "rollout state"
    TARGET = "target", "drone state"
    DISPATCH = "dispatch", "deploy sent"
    REVERT = "revert", "revert"
    DRIFT = "drift", "drift detected"
    DRIFT_CLEARED = "drift_cleared", "drift cleared"
    RECONCILE = "reconcile", "reconcile"
    OPERATOR = "operator", "operator action"
