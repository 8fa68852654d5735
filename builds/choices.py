"""Enumerations of the builds app: states, failure reasons, triggers, webhook providers."""
from django.db import models

from drones.choices import NO_NEW_WORK_STATUSES  # noqa: F401  (the fleet's rule; re-exported for builds)


class BuildState(models.TextChoices):
    """Lifecycle of a build: `pending → assigned → running → success | failed | canceling → canceled`."""

    PENDING = "pending", "pending"
    ASSIGNED = "assigned", "assigned"
    RUNNING = "running", "running"
    SUCCESS = "success", "success"
    FAILED = "failed", "failed"
    CANCELING = "canceling", "canceling"
    CANCELED = "canceled", "canceled"


#: States in which a drone holds the build (counted against its capacity).
ACTIVE_STATES = (BuildState.ASSIGNED, BuildState.RUNNING, BuildState.CANCELING)
#: States a build never leaves.
TERMINAL_STATES = (BuildState.SUCCESS, BuildState.FAILED, BuildState.CANCELED)


class AttemptState(models.TextChoices):
    """Lifecycle of one attempt (one drone's try at a build)."""

    ASSIGNED = "assigned", "assigned"
    RUNNING = "running", "running"
    SUCCESS = "success", "success"
    FAILED = "failed", "failed"
    CANCELED = "canceled", "canceled"


class FailureReason(models.TextChoices):
    """Why a build or attempt failed (GitLab Runner's vocabulary, DESIGN.md §5)."""

    SCRIPT_FAILURE = "script_failure", "script failure"
    #: The source could not be cloned, fetched or checked out: the user's steps never ran.
    SOURCE_FAILURE = "source_failure", "source failure"
    RUNNER_SYSTEM_FAILURE = "runner_system_failure", "runner system failure"
    STUCK_OR_TIMEOUT_FAILURE = "stuck_or_timeout_failure", "stuck or timeout failure"
    JOB_EXECUTION_TIMEOUT = "job_execution_timeout", "job execution timeout"
    API_FAILURE = "api_failure", "API failure"
    LOG_SIZE_EXCEEDED = "log_size_exceeded", "log size exceeded"
    UNKNOWN_FAILURE = "unknown_failure", "unknown failure"


class TriggerKind(models.TextChoices):
    """What started a build."""

    MANUAL = "manual", "manual (admin)"
    WEBHOOK = "webhook", "webhook"
    API = "api", "API"
    RETRY = "retry", "retry"


class WebhookProvider(models.TextChoices):
    """Source forges whose push webhooks are understood."""

    GITHUB = "github", "GitHub"
    GITLAB = "gitlab", "GitLab"
    BITBUCKET = "bitbucket", "Bitbucket"


class DeliveryStatus(models.TextChoices):
    """What became of a webhook delivery."""

    RECEIVED = "received", "received"
    PROCESSED = "processed", "processed"
    IGNORED = "ignored", "ignored"
    FAILED = "failed", "failed"


class ArtifactState(models.TextChoices):
    """An artifact is announced first, then stored once its bytes are verified."""

    PENDING = "pending", "pending upload"
    STORED = "stored", "stored"
