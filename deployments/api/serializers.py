"""Serializers of the deployment manager's API: request bodies (unknown fields refused) and response shapes.

The nested documents (an analysis, a secrets plan, a manifest) are JSON the domain core builds
(docs/deployments.md describes each); they are typed as JSON objects here and their top-level keys
are declared, so the OpenAPI schema says what a client gets.
"""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from deployments.choices import FetchState, Tier
from deployments.models import CatalogFetch, CatalogSnapshot, DeploymentProfile, ProfileVersion
from swarm.core.serializers import RejectUnknownFields, StrictCharField, StrictIntegerField

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


class ProblemSerializer(serializers.Serializer):
    """One problem of one catalog file."""

    path = serializers.CharField()
    pointer = serializers.CharField(allow_blank=True)
    message = serializers.CharField()
    code = serializers.CharField()
    severity = serializers.ChoiceField(choices=["error", "warning"])


class CatalogSnapshotSerializer(serializers.ModelSerializer):
    """A catalog snapshot (immutable, named by the sha256 of its catalog files)."""

    bundle_sha256 = serializers.SerializerMethodField(help_text="The uploaded tarball in the bundle store, if any.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = CatalogSnapshot
        fields = ["id", "sha256", "source", "origin", "scenario_count", "resource_count", "invalid_count",
                  "ignored_files", "parser_version", "bundle_sha256", "created_at", "created_by", "url"]

    def get_bundle_sha256(self, snapshot) -> str | None:
        return snapshot.bundle.sha256 if snapshot.bundle_id else None

    def get_url(self, snapshot) -> str:
        return reverse("catalog-detail", kwargs={"catalog_id": snapshot.pk})


class CatalogEntrySerializer(serializers.Serializer):
    """One entry of a snapshot, without its document."""

    key = serializers.CharField()
    kind = serializers.CharField()
    name = serializers.CharField()
    version = serializers.CharField(allow_blank=True)
    path = serializers.CharField()
    valid = serializers.BooleanField()


class CatalogDetailSerializer(CatalogSnapshotSerializer):
    """A snapshot with its entries and the problems of its files."""

    entries = serializers.SerializerMethodField()
    problems = ProblemSerializer(many=True)

    class Meta(CatalogSnapshotSerializer.Meta):
        fields = [*CatalogSnapshotSerializer.Meta.fields, "entries", "problems"]

    @extend_schema_field(CatalogEntrySerializer(many=True))
    def get_entries(self, snapshot):
        return CatalogEntrySerializer(self.context["entries"], many=True).data


class CatalogImportSerializer(serializers.Serializer):
    """The answer of an upload: the snapshot, whether this import created it, and its per-file problems."""

    snapshot = CatalogSnapshotSerializer()
    created = serializers.BooleanField()
    problems = ProblemSerializer(many=True)


class CatalogUploadFormSerializer(RejectUnknownFields, serializers.Serializer):
    """`multipart/form-data`: the catalog as a `.tar.gz` in the `bundle` field."""

    bundle = serializers.FileField(help_text="The catalog tree as a .tar.gz (the bundle store's safety rules apply).")
    tenant = serializers.CharField(required=False, help_text="The tenant's slug (tokens bound to no tenant).")
    sha256 = serializers.RegexField(SHA256_PATTERN, required=False, help_text="The tarball's sha256, checked.")
    strict = serializers.BooleanField(required=False, help_text="Refuse the whole import on any file's error.")


class CatalogGitSerializer(RejectUnknownFields, serializers.Serializer):
    """`application/json`: a git repository and ref to clone on the worker."""

    git_url = StrictCharField(max_length=500)
    ref = StrictCharField(max_length=200, required=False, default="main")
    tenant = StrictCharField(required=False, max_length=64)
    strict = serializers.BooleanField(required=False, default=False)


class CatalogFetchSerializer(serializers.ModelSerializer):
    """A git import: queued, running, succeeded (with its snapshot) or failed (with the reason)."""

    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    snapshot = CatalogSnapshotSerializer(allow_null=True)
    state = serializers.ChoiceField(choices=FetchState.choices)
    problems = ProblemSerializer(many=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = CatalogFetch
        fields = ["id", "tenant", "git_url", "ref", "strict", "state", "commit_sha", "snapshot", "created",
                  "error_code", "error_detail", "problems", "created_at", "finished_at", "created_by", "url"]

    def get_url(self, fetch) -> str:
        return reverse("catalog-fetch-detail", kwargs={"fetch_id": fetch.pk})


class CatalogFetchAcceptedSerializer(serializers.Serializer):
    """202: the fetch's id, state and the URL to poll."""

    fetch_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=FetchState.choices)
    url = serializers.CharField()


class AnalysisSerializer(serializers.Serializer):
    """A scenario's analysis (docs/deployments.md#analysis: nodes, edges, requirements, fitness, swaps)."""

    snapshot = serializers.CharField()
    scenario = serializers.CharField()
    swaps = serializers.DictField(child=serializers.CharField())
    root = serializers.CharField()
    max_depth = serializers.IntegerField()
    nodes = serializers.ListField(child=serializers.JSONField())
    edges = serializers.ListField(child=serializers.JSONField())
    disabled = serializers.ListField(child=serializers.JSONField())
    missing = serializers.ListField(child=serializers.JSONField())
    invalid = serializers.ListField(child=serializers.JSONField())
    version_problems = serializers.ListField(child=serializers.JSONField())
    requirements = serializers.JSONField()
    fitness = serializers.DictField(child=serializers.JSONField())
    swap_suggestions = serializers.ListField(child=serializers.JSONField())
    tier = serializers.CharField(required=False, help_text="With ?tier=: the tier `fitness` is narrowed to.")


class CycleErrorSerializer(serializers.Serializer):
    """422 `dependency_cycle`: the cycle's members in order, the first repeated at the end."""

    error = serializers.CharField()
    detail = serializers.CharField()
    field = serializers.CharField(required=False)
    cycle = serializers.ListField(child=serializers.CharField(), required=False)


class AssemblyErrorSerializer(serializers.Serializer):
    """422 of an assembly: `not_deployable`, `infrastructure_secret` (each secret and the swaps that remove it)
    or `invalid_manifest` (each violation with its JSON pointer)."""

    error = serializers.CharField()
    detail = serializers.CharField()
    field = serializers.CharField(required=False)
    secrets = serializers.ListField(child=serializers.JSONField(), required=False)
    errors = serializers.ListField(child=serializers.JSONField(), required=False)


class ProfileVersionSerializer(serializers.ModelSerializer):
    """One immutable version of a profile."""

    snapshot = serializers.CharField(source="snapshot.sha256")
    secrets = serializers.JSONField(source="decisions", help_text="How each secret reaches an install; never a value.")
    swaps = serializers.DictField(child=serializers.CharField())
    settings = serializers.JSONField()

    class Meta:
        model = ProfileVersion
        fields = ["number", "snapshot", "scenario", "tier", "swaps", "secrets", "settings", "note", "created_by",
                  "created_at"]


class ProfileSerializer(serializers.ModelSerializer):
    """A deployment profile with its current version."""

    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    current_version = ProfileVersionSerializer()
    url = serializers.SerializerMethodField()

    class Meta:
        model = DeploymentProfile
        fields = ["id", "tenant", "slug", "name", "current_version", "created_at", "created_by", "url"]

    def get_url(self, profile) -> str:
        return reverse("profile-detail", kwargs={"profile_id": profile.pk})


class ProfileCreateSerializer(RejectUnknownFields, serializers.Serializer):
    """`POST /profiles`: a new profile and its version 1."""

    slug = serializers.SlugField(max_length=64)
    name = StrictCharField(max_length=200, required=False, default="", allow_blank=True)
    tenant = StrictCharField(max_length=64, required=False, help_text="The tenant's slug (tokens bound to no tenant).")
    snapshot = serializers.RegexField(SHA256_PATTERN, help_text="The catalog snapshot's sha256.")
    scenario = StrictCharField(max_length=100)
    tier = StrictCharField(max_length=32, help_text="local, desktop, mobile, saas, server, enterprise "
                                                   "(or tier-2-desktop, …)")
    swaps = serializers.DictField(child=StrictCharField(max_length=100), required=False, default=dict)
    secrets = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)
    settings = serializers.JSONField(required=False, default=dict)
    note = StrictCharField(max_length=500, required=False, default="", allow_blank=True)


class ProfileSetSerializer(RejectUnknownFields, serializers.Serializer):
    """`POST /profiles/<id>/set`: a new version with the given fields replaced; `secret_decisions` merges."""

    snapshot = serializers.RegexField(SHA256_PATTERN, required=False)
    scenario = StrictCharField(max_length=100, required=False)
    tier = StrictCharField(max_length=32, required=False)
    secrets = serializers.DictField(child=serializers.JSONField(), required=False, allow_null=True,
                                    help_text="Replaces every decision (null clears them).")
    secret_decisions = serializers.DictField(child=serializers.JSONField(allow_null=True), required=False,
                                             help_text="{secret id: decision or null}: merged into the current ones.")
    settings = serializers.JSONField(required=False, allow_null=True, help_text="Replaces the settings.")
    note = StrictCharField(max_length=500, required=False, default="", allow_blank=True)


class ProfileSwapSerializer(RejectUnknownFields, serializers.Serializer):
    """`POST /profiles/<id>/swap`: swap a dependency for another (a null replacement removes the swap)."""

    original = StrictCharField(max_length=100)
    replacement = StrictCharField(max_length=100, allow_null=True)
    note = StrictCharField(max_length=500, required=False, default="", allow_blank=True)


class ChangeSerializer(serializers.Serializer):
    """One difference between two versions."""

    pointer = serializers.CharField()
    op = serializers.ChoiceField(choices=["add", "remove", "replace"])
    old = serializers.JSONField(allow_null=True)
    new = serializers.JSONField(allow_null=True)


class ProfileChangeSerializer(serializers.Serializer):
    """The version a change left current, whether it created it, and what changed."""

    version = ProfileVersionSerializer()
    created = serializers.BooleanField()
    changes = ChangeSerializer(many=True)


class ProfileDiffSerializer(serializers.Serializer):
    """What changed from version `from` to version `to`, who made `to` and when."""

    profile = serializers.CharField()
    to = serializers.IntegerField()
    changes = ChangeSerializer(many=True)
    created_by = serializers.CharField(allow_blank=True)
    created_at = serializers.CharField()
    note = serializers.CharField(allow_blank=True)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.IntegerField()  # a Python keyword: declared here
        return fields


class SecretsPlanSerializer(serializers.Serializer):
    """The secrets plan of a profile's current version (docs/deployments.md#secrets-plan)."""

    tier = serializers.ChoiceField(choices=Tier.choices)
    bundle_safe = serializers.BooleanField()
    secrets = serializers.ListField(child=serializers.JSONField())
    excluded = serializers.ListField(child=serializers.JSONField())
    infrastructure = serializers.ListField(child=serializers.JSONField())
    unused_decisions = serializers.ListField(child=serializers.CharField())


class ManifestSerializer(serializers.Serializer):
    """An assembled `bundle.json`: the document, its canonical bytes (as a string) and their sha256."""

    profile = serializers.IntegerField()
    version = serializers.IntegerField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    canonical = serializers.CharField(help_text="The canonical JSON export; its sha256 is `sha256`.")
    manifest = serializers.JSONField()


class ManifestValidateSerializer(RejectUnknownFields, serializers.Serializer):
    """`POST /manifests/validate`: a manifest to check against the bundle-manifest schema."""

    manifest = serializers.JSONField()


class ManifestValidationSerializer(serializers.Serializer):
    """Every violation with its JSON pointer; the canonical sha256 of a valid manifest."""

    valid = serializers.BooleanField()
    errors = serializers.ListField(child=serializers.JSONField())
    sha256 = serializers.CharField(allow_null=True)


class VersionQuerySerializer(serializers.Serializer):
    """`?from=&to=` of a diff (version numbers; default: the current version and the one before)."""

    to = StrictIntegerField(required=False, min_value=1)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1)
        fields["to"] = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1)
        return fields


class PackageRequestSerializer(serializers.Serializer):
    """`POST /profiles/<id>/package`."""

    platforms = serializers.ListField(child=serializers.RegexField(r"^[a-z0-9]+-[a-z0-9]+$", max_length=32),
                                      min_length=1, max_length=8)
    register_as = serializers.ChoiceField(choices=["workflow", "payload"])
    git_url = serializers.CharField(max_length=500, help_text="The repository the builds clone (the scenario's source).")
    ref = serializers.CharField(max_length=200, required=False, allow_blank=True)
    name = serializers.SlugField(max_length=64, required=False,
                                 help_text="Workflow slug or payload type (default: the profile's slug).")
    version = serializers.RegexField(r"^\d+\.\d+\.\d+$", required=False, default="1.0.0",
                                     help_text="Each platform registers <version>+<platform>.")
    labels = serializers.DictField(child=serializers.ListField(child=serializers.CharField(max_length=100)),
                                   required=False, default=dict, help_text="Extra drone labels per platform.")


class PackageAcceptedSerializer(serializers.Serializer):
    package_id = serializers.IntegerField()
    status = serializers.CharField()
    logs_url = serializers.CharField()
    url = serializers.CharField()


class PackagePlatformSerializer(serializers.Serializer):
    platform = serializers.CharField()
    state = serializers.CharField()
    reason = serializers.CharField()
    required_labels = serializers.ListField(child=serializers.CharField())
    build_id = serializers.IntegerField(allow_null=True)
    artifacts = serializers.ListField(child=serializers.DictField())
    bundle_sha256 = serializers.SerializerMethodField()
    registered_version = serializers.CharField()

    def get_bundle_sha256(self, row) -> str | None:
        return row.bundle.sha256 if row.bundle_id else None

    def to_representation(self, row):
        body = super().to_representation(row)
        body["artifacts"] = [{k: a[k] for k in ("path", "sha256", "size")} for a in row.artifacts]
        return body


class PackageRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    profile = serializers.IntegerField(source="profile_id")
    profile_version = serializers.IntegerField(source="profile_version.number")
    manifest_sha256 = serializers.CharField()
    register_as = serializers.CharField()
    register_name = serializers.CharField()
    version_label = serializers.CharField()
    state = serializers.CharField()
    status = serializers.CharField(source="state")
    reason = serializers.CharField()
    assets = serializers.ListField(child=serializers.DictField())
    platforms = PackagePlatformSerializer(many=True, source="platforms.all")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class PackageLogSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    log = serializers.CharField()
    build_logs = serializers.DictField(child=serializers.CharField())
