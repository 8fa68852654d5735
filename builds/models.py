"""Build models: queues, jobs, builds and their attempts, log chunks, artifacts, webhook deliveries."""
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from builds.choices import (
    ACTIVE_STATES,
    ArtifactState,
    AttemptState,
    BuildState,
    DeliveryStatus,
    FailureReason,
    TriggerKind,
    WebhookProvider,
)
from swarm.core.secret_box import MAPPING, EncryptedTextField, plaintext_property
from tenancy.scope import TenantScopedQuerySet


class Queue(models.Model):
    """A named build queue: claims take higher `priority` first.

    `max_concurrent` caps builds of this queue held by drones at once;
    `tenant_rate_limit_per_minute` caps how many builds of one tenant start per
    minute from it. Empty means unlimited.
    """

    name = models.SlugField(max_length=64, unique=True)
    priority = models.IntegerField(default=50, help_text="Higher is claimed first.")
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    tenant_rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-priority", "name"]

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    """What to build: where the source is, which branches, and the build config.

    `build_config` holds `image`, `steps` (shell commands), `env`, `artifacts`
    (globs), `timeout` (seconds), `labels` (required drone labels), `retry`
    (`{max, when: [failure reasons]}`) and `notifications`
    (`{email: [...], webhook: url, on: [states]}`); see docs/builds.md.
    """

    tenant = models.ForeignKey(
        "tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE, related_name="build_jobs"
    )
    name = models.SlugField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    scm_url = models.CharField(max_length=500, help_text="Git URL (https, ssh or file://) of the repository.")
    scm_url_normalized = models.CharField(max_length=500, db_index=True, editable=False)
    default_branch = models.CharField(
        max_length=200, blank=True, default="",
        help_text="Branch built when a trigger names none; empty: the repository's default branch (its HEAD).")
    branch_filter = models.CharField(
        max_length=500, blank=True, help_text="Comma-separated branch globs pushes must match (empty: all)."
    )
    build_config = models.JSONField(default=dict)
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="jobs")
    # Secrets, encrypted at rest (swarm/core/secret_box.py): only the claim
    # response to the drone running a build carries the first two in clear.
    scm_credential_encrypted = EncryptedTextField(blank=True, default="")
    secrets_encrypted = EncryptedTextField(blank=True, default="", kind=MAPPING)
    webhook_secret_encrypted = EncryptedTextField(
        blank=True, default="", help_text="Shared secret of this repository's webhooks (else the global one).")
    build_tags = models.BooleanField(
        default=False, help_text="Build pushed tags too (a tag push of a job that does not is recorded as ignored).")
    enabled = models.BooleanField(default=True)
    next_build_number = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # A job without a tenant is visible to unbound principals only (tenancy.scope).
    tenant_path = "tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="builds_job_unique_name_per_tenant",
                                    nulls_distinct=False),
        ]

    def __str__(self) -> str:
        return self.name

    # `Job(webhook_secret=...)`, `job_update(webhook_secret=...)` and the
    # webhook check read and write the plaintext; only its ciphertext is stored.
    webhook_secret = plaintext_property("webhook_secret_encrypted", "The decrypted webhook secret (empty when none "
                                        "is set; SecretUndecryptable when no key fits).")


class BuildQuerySet(TenantScopedQuerySet):
    """Builds: the tenant scope and the builds drones hold."""

    def active(self):
        """Builds a drone currently holds."""
        return self.filter(state__in=ACTIVE_STATES)


class Build(models.Model):
    """One run of a job at a commit. Retries after a fault are new attempts of the same build.

    The claim columns (`queue_priority`, `required_labels`, `avoid_drone_ids`)
    are copied from the job when the build is queued, so the claim query reads
    one table.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="builds")
    number = models.PositiveIntegerField()
    commit_sha = models.CharField(max_length=64, blank=True)
    branch = models.CharField(max_length=200, blank=True)
    trigger = models.CharField(max_length=16, choices=TriggerKind.choices)
    triggered_by = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True)
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=BuildState.choices, default=BuildState.PENDING, db_index=True)
    failure_reason = models.CharField(max_length=32, choices=FailureReason.choices, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="builds")
    queue_priority = models.IntegerField(default=50)
    required_labels = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    timeout_seconds = models.PositiveIntegerField(default=3600)
    drone = models.ForeignKey("drones.Drone", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="builds")
    attempt_count = models.PositiveIntegerField(default=0)
    retries_used = models.PositiveIntegerField(default=0)
    avoid_drone_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    avoid_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    queued_at = models.DateTimeField(default=timezone.now)
    assigned_at = models.DateTimeField(null=True, blank=True)
    ack_deadline = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "job__tenant"
    objects = BuildQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="builds_build_unique_number_per_job"),
        ]
        indexes = [
            models.Index(fields=["-queue_priority", "id"], name="builds_pending_claim_order",
                         condition=models.Q(state=BuildState.PENDING)),
            models.Index(fields=["drone", "state"], name="builds_build_drone_state"),
        ]

    def __str__(self) -> str:
        return f"{self.job.name} #{self.number}"

    @property
    def duration_seconds(self) -> float | None:
        """Wall time from start to finish (or to now while it runs)."""
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()

    @property
    def is_finished(self) -> bool:
        return self.state in (BuildState.SUCCESS, BuildState.FAILED, BuildState.CANCELED)


class BuildAttempt(models.Model):
    """One drone's try at a build, numbered 1, 2, … with its own log. Never reused."""

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    drone = models.ForeignKey("drones.Drone", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="build_attempts")
    state = models.CharField(max_length=16, choices=AttemptState.choices, default=AttemptState.ASSIGNED)
    failure_reason = models.CharField(max_length=32, choices=FailureReason.choices, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    assigned_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    log_size = models.BigIntegerField(default=0)
    log_checksum = models.CharField(max_length=80, blank=True, help_text="sha256:<hex> of the stored log.")
    log_checksum_reported = models.CharField(max_length=80, blank=True)
    log_storage_key = models.CharField(max_length=500, blank=True, help_text="Set once the log is archived.")

    tenant_path = "build__job__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["build_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["build", "number"], name="builds_attempt_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.build} attempt {self.number}"


class BuildLogChunk(models.Model):
    """A piece of an attempt's log at byte `offset`; chunks are contiguous and never overlap."""

    attempt = models.ForeignKey(BuildAttempt, on_delete=models.CASCADE, related_name="log_chunks")
    offset = models.BigIntegerField()
    data = models.BinaryField()

    tenant_path = "attempt__build__job__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["attempt_id", "offset"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "offset"], name="builds_log_chunk_unique_offset"),
        ]


class Artifact(models.Model):
    """A file a build produced, stored in blob storage and verified by sha256."""

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="artifacts")
    attempt = models.ForeignKey(BuildAttempt, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=255)
    path = models.CharField(max_length=1000, help_text="Path inside the workspace.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_key = models.CharField(max_length=700)
    state = models.CharField(max_length=16, choices=ArtifactState.choices, default=ArtifactState.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    stored_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "build__job__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["build_id", "path"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "path"], name="builds_artifact_unique_path_per_attempt"),
        ]

    def __str__(self) -> str:
        return self.path


class WebhookDelivery(models.Model):
    """One delivery from a forge, unique on (provider, delivery id) so a replay is a no-op.

    Not tenant-owned: one push may queue builds of jobs in several tenants
    (`build_ids`), and deliveries are read only in the admin.
    """

    provider = models.CharField(max_length=16, choices=WebhookProvider.choices)
    delivery_id = models.CharField(max_length=200)
    event = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.RECEIVED)
    payload = models.JSONField(default=dict)
    detail = models.CharField(max_length=500, blank=True)
    build_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["provider", "delivery_id"], name="builds_webhook_delivery_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.delivery_id}"


class WebhookNamespaceSecret(models.Model):
    """The shared secret of a forge webhook set on a whole namespace, not on one repository.

    A GitHub organisation (or user) hook, a GitLab group hook (it fires for
    the group's subgroups too) or a Bitbucket workspace hook signs every
    delivery with one secret. A delivery for a repository in `namespace`
    (compared case-insensitively: GitHub owner, GitLab group path such as
    `acme/platform`, Bitbucket workspace) is verified with it; it builds
    the jobs on that repository that have no webhook secret of their own.
    Stored encrypted like the job's own secret.
    """

    provider = models.CharField(max_length=16, choices=WebhookProvider.choices)
    namespace = models.CharField(max_length=255, help_text="GitHub organisation or user, GitLab group path, "
                                                           "Bitbucket workspace.")
    secret_encrypted = EncryptedTextField(help_text="The hook's shared secret (stored encrypted).")
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "namespace"]
        constraints = [
            models.UniqueConstraint(models.F("provider"), Lower("namespace"),
                                    name="builds_webhook_namespace_secret_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.namespace}"

    secret = plaintext_property("secret_encrypted", "The decrypted secret (SecretUndecryptable when no key fits).")


class BuildNotification(models.Model):
    """One notification channel of one build, sent once: the row is the lock two workers meet on.

    `build_notify_finished` locks (or creates) the row of each channel, sends
    while holding it and marks it sent in the same transaction; a second
    worker waits on the lock, then finds it sent. A send that fails rolls
    back, so the channel stays unsent and a later run may try again.
    """

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=32)
    sent_at = models.DateTimeField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    tenant_path = "build__job__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["build_id", "channel"]
        constraints = [
            models.UniqueConstraint(fields=["build", "channel"], name="builds_notification_unique_channel"),
        ]

    def __str__(self) -> str:
        return f"{self.build_id} {self.channel}"


class BuildEvent(models.Model):
    """Why a build changed: queued, claimed, started, cancel requested, reaped, retried, finished."""

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="events")
    attempt_number = models.PositiveIntegerField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=40)
    actor = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    tenant_path = "build__job__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["build_id", "at", "id"]

    def __str__(self) -> str:
        return f"{self.build_id} {self.kind}"
