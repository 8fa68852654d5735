"""Workflows, their immutable versions and activations, executions and tenant secrets.

Every model here belongs to a tenant: each declares its `tenant_path` and
uses `tenancy.scope.TenantScopedQuerySet`, whose `visible_to(principal)` is
the one tenant filter.
"""
from django.db import models
from django.db.models import Q

from swarm.core.secret_box import EncryptedTextField, plaintext_property
from tenancy.models import Tenant  # noqa: F401  (moved to tenancy; still importable from here)
from tenancy.scope import TenantScopedQuerySet
from workflows.choices import Runtime


class Workflow(models.Model):
    """A tenant's named unit of code; versions of it are bundles."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="workflows")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64)
    description = models.TextField(blank=True)
    runtime = models.CharField(max_length=16, choices=Runtime.choices, default=Runtime.PYTHON311)
    entrypoint = models.CharField(max_length=500, default="main.py")
    memory_mb = models.PositiveIntegerField(default=512)
    timeout_sec = models.PositiveIntegerField(default=900)
    cpus = models.PositiveSmallIntegerField(default=1, blank=True, help_text="Virtual CPUs of a microVM execution.")
    execution_runtime = models.CharField(
        max_length=32, blank=True, default="",
        help_text="Where executions run (process, drone, ...); blank means SWARM_EXECUTION_RUNTIME.",
    )
    drone_labels = models.JSONField(
        default=list, blank=True,
        help_text="Labels a drone must have to run this workflow's drone-runtime executions (all of them).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "slug"]
        constraints = [models.UniqueConstraint(fields=["tenant", "slug"], name="workflow_slug_unique_per_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.slug}"


class WorkflowVersionQuerySet(TenantScopedQuerySet):
    def active(self):
        return self.filter(is_active=True)


class WorkflowVersion(models.Model):
    """One immutable release of a workflow: a semver label bound to a bundle.

    A database trigger refuses any change to `version`, `bundle`, `metadata`
    or `workflow` once written; only activation fields move. At most one
    version per workflow is active (partial unique index).
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=100)
    bundle = models.ForeignKey("bundles.Bundle", on_delete=models.PROTECT, related_name="versions")
    metadata = models.JSONField(default=dict, blank=True)
    deployed_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "workflow__tenant"
    objects = WorkflowVersionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "version"], name="version_label_unique_per_workflow"),
            models.UniqueConstraint(
                fields=["workflow"], condition=Q(is_active=True), name="one_active_version_per_workflow"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} {self.version}"

    @property
    def bundle_hash(self) -> str:
        return self.bundle.sha256


class WorkflowActivation(models.Model):
    """Every activation, with the version it replaced: the history rollback follows."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="activations")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    previous_version = models.ForeignKey(
        WorkflowVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=16, choices=[("activate", "activate"), ("rollback", "rollback")])
    activated_by = models.CharField(max_length=200, blank=True)
    activated_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "workflow__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-activated_at", "-id"]

    def __str__(self) -> str:
        return f"{self.workflow} → {self.version.version} ({self.reason})"


class ActiveWorkflowVersion(models.Model):
    """Read-only model over the SQL view `active_workflow_versions`."""

    version = models.OneToOneField(WorkflowVersion, primary_key=True, db_column="version_id",
                                   on_delete=models.DO_NOTHING, related_name="+")
    workflow = models.ForeignKey(Workflow, db_column="workflow_id", on_delete=models.DO_NOTHING, related_name="+")
    tenant = models.ForeignKey(Tenant, db_column="tenant_id", on_delete=models.DO_NOTHING, related_name="+")
    tenant_slug = models.CharField(max_length=64)
    workflow_slug = models.CharField(max_length=64)
    version_label = models.CharField(max_length=100)
    bundle_hash = models.CharField(max_length=64)
    bundle_size = models.BigIntegerField()
    runtime = models.CharField(max_length=16)
    entrypoint = models.CharField(max_length=500)
    memory_mb = models.PositiveIntegerField()
    timeout_sec = models.PositiveIntegerField()
    activated_at = models.DateTimeField(null=True)

    tenant_path = "tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = "active_workflow_versions"


# --- Executions and tenant secrets ------------------------------------------

from workflows.choices import TERMINAL_STATUSES, ExecutionEventType, ExecutionStatus, OutputStream  # noqa: E402


class ExecutionQuerySet(TenantScopedQuerySet):
    def live(self):
        """Executions that have not reached a terminal status."""
        return self.exclude(status__in=TERMINAL_STATUSES)


class Execution(models.Model):
    """One run of a workflow's version, from spawn to exit.

    The version is pinned at spawn time: activating another version later
    never changes what an execution runs. `runtime_state` is what the runtime
    needs to find its process again (pid, host, sandbox) for cancel/timeout.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="executions")
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="executions")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="executions")
    runtime = models.CharField(max_length=32, help_text="The execution runtime (process, drone, ...).")
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING,
                              db_index=True)
    exit_code = models.IntegerField(null=True, blank=True)
    env = models.JSONField(default=dict, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    timeout_sec = models.PositiveIntegerField()
    spawned_by = models.CharField(max_length=200, blank=True)
    runtime_state = models.JSONField(default=dict, blank=True)
    # The drone runtime: the labels a drone needs (the spawn's, else the workflow's), the drone that
    # claimed it, and when that drone last renewed its lease (its poll reports the executions it runs).
    required_labels = models.JSONField(default=list, blank=True)
    drone = models.ForeignKey("drones.Drone", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="executions")
    lease_renewed_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(default=0)
    # Events the boot has reported so far: a retried report (its answer lost to a restarting
    # server) carries the same `first` index, and what was stored already is not stored twice.
    boot_reported = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True, db_index=True)

    tenant_path = "tenant"
    objects = ExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"execution {self.pk} of {self.workflow}"

    @property
    def is_finished(self) -> bool:
        """Whether the execution reached a terminal status."""
        return self.status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from spawn to finish (or until now while it runs)."""
        from django.utils import timezone

        end = self.finished_at or (None if self.is_finished else timezone.now())
        return None if end is None else (end - self.created_at).total_seconds()


class ExecutionEvent(models.Model):
    """One entry of an execution's append-only event stream, numbered by `seq`.

    A database trigger refuses UPDATE: events are written once.
    """

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=32, choices=ExecutionEventType.choices)
    at = models.DateTimeField(auto_now_add=True)
    stream = models.CharField(max_length=8, choices=OutputStream.choices, blank=True)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    tenant_path = "execution__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [models.UniqueConstraint(fields=["execution", "seq"], name="execution_event_seq_unique")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"


class TenantSecret(models.Model):
    """A tenant's secret, encrypted at rest (Fernet), handed to executions of attached workflows.

    `name` is the environment variable the entrypoint sees. The plaintext is
    never stored and only leaves the control plane through the metadata
    service.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=128)
    ciphertext = EncryptedTextField()  # swarm/core/secret_box.py
    workflows = models.ManyToManyField(Workflow, blank=True, related_name="secrets",
                                       help_text="Workflows whose executions receive this secret.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Scoped like the rest; only names and metadata are ever serialised, never values.
    tenant_path = "tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="secret_name_unique_per_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}:{self.name}"

    value = plaintext_property("ciphertext", "The decrypted value (SecretUndecryptable when no key fits).")


class CanaryState(models.TextChoices):
    """A workflow canary: splitting traffic, then promoted (candidate active) or reverted (split removed)."""

    ACTIVE = "active", "active"
    PROMOTED = "promoted", "promoted"
    REVERTED = "reverted", "reverted"


class WorkflowCanary(models.Model):
    """A weighted split of a workflow's spawns between its active version and a candidate.

    At most one active canary per workflow (a partial unique index). Spawns
    pick the candidate for `weight` percent of execution ids (deterministic per
    id); the candidate's failure rate over `min_executions` finished runs
    promotes it (auto_promote) or reverts the split.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="canaries")
    candidate = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    primary = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    weight = models.PositiveSmallIntegerField(help_text="Percent of spawns that run the candidate (1–99)")
    auto_promote = models.BooleanField(default=False)
    failure_rate_threshold = models.FloatField(default=0.1, help_text="Candidate failure rate (0–1) that reverts")
    min_executions = models.PositiveIntegerField(default=10, help_text="Finished candidate runs before judging")
    state = models.CharField(max_length=10, choices=CanaryState.choices, default=CanaryState.ACTIVE)
    reason = models.CharField(max_length=300, blank=True, default="")
    created_by = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "workflow__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["workflow"], condition=models.Q(state="active"),
                                               name="one_active_canary_per_workflow")]

    def __str__(self) -> str:
        return f"{self.workflow} canary {self.candidate.version} at {self.weight}%"
