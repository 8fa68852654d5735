"""Catalog snapshots (immutable, by content hash) and tenant-owned deployment profiles (immutable versions).

The tenant model is referenced by its string name: `Tenant` moves to a `tenancy` app (same table),
and that move only retargets these references.
"""
from __future__ import annotations

from django.db import models

from deployments.choices import EntryKind, FetchState, PackageState, RegisterAs, Tier
from tenancy.scope import TenantScopedQuerySet

TENANT_MODEL = "tenancy.Tenant"


class CatalogSnapshot(models.Model):
    """One imported catalog tree, identified by the sha256 of its catalog files; never changes once written.

    The same tree imported again (by anyone, from any archive of it) is this row: the import is a no-op.
    """

    sha256 = models.CharField(max_length=64, unique=True)
    source = models.CharField(max_length=16, help_text="tarball, directory, git or files")
    origin = models.CharField(max_length=500, blank=True, help_text="Where it came from: a git URL and ref, a path, "
                                                                     "a bundle digest.")
    scenario_count = models.IntegerField(default=0)
    resource_count = models.IntegerField(default=0)
    invalid_count = models.IntegerField(default=0)
    ignored_files = models.IntegerField(default=0)
    problems = models.JSONField(default=list, blank=True, help_text="[{path, pointer, message, code, severity}]")
    parser_version = models.IntegerField(default=1)
    # The uploaded tarball this snapshot was first read from, kept in the bundle store (a reference keeps the
    # orphan sweep off it); none for a directory or a git clone.
    bundle = models.ForeignKey("bundles.Bundle", on_delete=models.PROTECT, null=True, blank=True,
                               related_name="catalog_snapshots")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)

    # A tenant sees the snapshots it imported (a profile can only use a snapshot its tenant imported).
    tenant_path = "imports__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"catalog sha256:{self.sha256[:12]}… ({self.scenario_count} scenarios, {self.resource_count} resources)"


class CatalogEntry(models.Model):
    """One scenario or resource of a snapshot, as its normalised document (`deployments.catalog.parsing`)."""

    snapshot = models.ForeignKey(CatalogSnapshot, on_delete=models.CASCADE, related_name="entries")
    key = models.CharField(max_length=120, help_text="kind:name, e.g. resource:postgres")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=100, blank=True)
    path = models.CharField(max_length=300)
    valid = models.BooleanField(default=True)
    document = models.JSONField()

    class Meta:
        ordering = ["snapshot", "key"]
        constraints = [models.UniqueConstraint(fields=["snapshot", "key"], name="catalog_entry_unique_key")]

    def __str__(self) -> str:
        return self.key


class CatalogImport(models.Model):
    """Who imported a snapshot for which tenant (once per tenant; re-imports write nothing)."""

    snapshot = models.ForeignKey(CatalogSnapshot, on_delete=models.CASCADE, related_name="imports")
    tenant = models.ForeignKey(TENANT_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                               related_name="catalog_imports")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)

    tenant_path = "tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["snapshot", "tenant"], name="catalog_import_once_per_tenant",
                                               nulls_distinct=False)]


class CatalogFetch(models.Model):
    """A request to import a catalog from a git URL and ref, cloned on the worker (`deployments.tasks`).

    `queued` → `running` → `succeeded` (with its snapshot) or `failed` (with the reason); the API answers
    202 with its URL to poll.
    """

    tenant = models.ForeignKey(TENANT_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                               related_name="catalog_fetches")
    git_url = models.CharField(max_length=500)
    ref = models.CharField(max_length=200)
    strict = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=FetchState.choices, default=FetchState.QUEUED)
    snapshot = models.ForeignKey(CatalogSnapshot, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="fetches")
    created = models.BooleanField(null=True, help_text="Whether the import made a new snapshot (null until done).")
    commit_sha = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.TextField(blank=True)
    problems = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=200, blank=True)

    tenant_path = "tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"fetch {self.git_url}@{self.ref} ({self.state})"


class DeploymentProfile(models.Model):
    """A tenant's named way of deploying a scenario; its content lives in immutable versions."""

    tenant = models.ForeignKey(TENANT_MODEL, on_delete=models.PROTECT, related_name="deployment_profiles")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    current_version = models.ForeignKey("ProfileVersion", on_delete=models.PROTECT, null=True, blank=True,
                                        related_name="+", help_text="The newest version: what assembly uses.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)

    tenant_path = "tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["tenant", "slug"]
        constraints = [models.UniqueConstraint(fields=["tenant", "slug"], name="profile_slug_unique_per_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.slug}"


class ProfileVersion(models.Model):
    """One immutable state of a profile: scenario (in a snapshot), tier, swaps, secrets decisions, settings.

    A database trigger (`deployments/sql/swarm_profile_version_immutable.sql`) refuses any UPDATE;
    every change is a new row with the next number.
    """

    profile = models.ForeignKey(DeploymentProfile, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    snapshot = models.ForeignKey(CatalogSnapshot, on_delete=models.PROTECT, related_name="profile_versions")
    scenario = models.CharField(max_length=100)
    tier = models.CharField(max_length=16, choices=Tier.choices)
    swaps = models.JSONField(default=dict, blank=True, help_text="{original: replacement}")
    # The profile's "secrets": how each secret reaches an install, by secret id. Named `decisions` because it
    # holds no secret (never a value) and is not encrypted; `content()` calls it `secrets`.
    decisions = models.JSONField(default=dict, blank=True,
                                 help_text="How each secret reaches an install, by secret id; never a value.")
    settings = models.JSONField(default=dict, blank=True)
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)

    tenant_path = "profile__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["profile", "-number"]
        constraints = [models.UniqueConstraint(fields=["profile", "number"], name="profile_version_unique_number")]

    def __str__(self) -> str:
        return f"{self.profile.slug} v{self.number}"

    def content(self) -> dict:
        """What this version says (what diffs compare and assembly reads)."""
        return {"snapshot": self.snapshot.sha256, "scenario": self.scenario, "tier": self.tier,
                "swaps": self.swaps, "secrets": self.decisions, "settings": self.settings}


class PackageRun(models.Model):
    """One packaging of a profile version's manifest for some platforms (`deployments.packaging`).

    `queued` → `procuring` (assets by URL, verified by sha256) → `building` (one CI build per platform)
    → `staging` (a reproducible tarball per platform, registered as a version) → `succeeded`; or `failed`
    with `reason`, or `canceled`. The manifest is frozen here at request time, so what is built is what
    was asked for even if the profile changes meanwhile.
    """

    tenant = models.ForeignKey(TENANT_MODEL, on_delete=models.PROTECT, related_name="package_runs")
    profile = models.ForeignKey(DeploymentProfile, on_delete=models.PROTECT, related_name="package_runs")
    profile_version = models.ForeignKey(ProfileVersion, on_delete=models.PROTECT, related_name="package_runs")
    manifest_sha256 = models.CharField(max_length=64)
    manifest_canonical = models.TextField(help_text="The canonical bundle.json this run packages.")
    register_as = models.CharField(max_length=16, choices=RegisterAs.choices)
    register_name = models.CharField(max_length=64, help_text="The workflow slug or payload type registered to.")
    version_label = models.CharField(max_length=64, help_text="Each platform registers <label>+<platform>.")
    git_url = models.CharField(max_length=500, help_text="The repository the builds clone.")
    ref = models.CharField(max_length=200, blank=True)
    labels = models.JSONField(default=dict, blank=True, help_text="Extra drone labels per platform.")
    job = models.ForeignKey("builds.Job", on_delete=models.SET_NULL, null=True, blank=True,
                            related_name="package_runs")
    state = models.CharField(max_length=16, choices=PackageState.choices, default=PackageState.QUEUED)
    reason = models.TextField(blank=True)
    assets = models.JSONField(default=list, blank=True,
                              help_text="[{path, sha256, size_bytes, url, downloaded}] once procured.")
    log = models.TextField(blank=True, help_text="What the run did, one line a step.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=200, blank=True)

    tenant_path = "tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"package {self.pk} of {self.profile_id} ({self.state})"


class PackagePlatform(models.Model):
    """One platform of a package run: its CI build, its artifacts, its tarball and registered version."""

    run = models.ForeignKey(PackageRun, on_delete=models.CASCADE, related_name="platforms")
    platform = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=PackageState.choices, default=PackageState.QUEUED)
    reason = models.TextField(blank=True)
    required_labels = models.JSONField(default=list, blank=True)
    build = models.ForeignKey("builds.Build", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="package_platforms")
    artifacts = models.JSONField(default=list, blank=True, help_text="[{path, sha256, size}] the build stored.")
    bundle = models.ForeignKey("bundles.Bundle", on_delete=models.PROTECT, null=True, blank=True,
                               related_name="package_platforms")
    registered_version = models.CharField(max_length=200, blank=True,
                                          help_text="workflow:<id>:<label> or payload:<id>:<label>")

    tenant_path = "run__tenant"
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["run", "platform"]
        constraints = [models.UniqueConstraint(fields=["run", "platform"], name="package_platform_unique")]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.platform} ({self.state})"
