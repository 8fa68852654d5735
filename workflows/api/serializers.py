"""Serializers of the workflow registry API."""
from rest_framework import serializers

from swarm.core.serializers import RejectUnknownFields
from workflows.choices import Runtime
from workflows.models import Workflow, WorkflowVersion


class WorkflowSerializer(serializers.ModelSerializer):
    """A workflow with the label of its active version."""

    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    active_version = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = ["id", "tenant", "name", "slug", "description", "runtime", "entrypoint", "memory_mb",
                  "timeout_sec", "cpus", "execution_runtime", "drone_labels", "created_at", "active_version"]

    def get_active_version(self, workflow: Workflow) -> str | None:
        # Querysets from workflows.selectors carry the label as an annotation
        # (one query for any number of rows); a freshly created workflow does not.
        if hasattr(workflow, "active_version_label"):
            return workflow.active_version_label
        active = workflow.versions.filter(is_active=True).only("version").first()
        return active.version if active else None


class WorkflowCreateSerializer(RejectUnknownFields, serializers.Serializer):
    """The body of `POST /tenants/<slug>/workflows`."""

    slug = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    runtime = serializers.ChoiceField(choices=Runtime.choices, default=Runtime.PYTHON311)
    entrypoint = serializers.CharField(max_length=500, default="main.py")
    memory_mb = serializers.IntegerField(min_value=16, max_value=1024 * 1024, default=512)
    timeout_sec = serializers.IntegerField(min_value=1, max_value=7 * 24 * 3600, default=900)


class WorkflowVersionSerializer(serializers.ModelSerializer):
    """One immutable version and its bundle."""

    workflow_id = serializers.IntegerField(read_only=True)
    bundle_hash = serializers.CharField(source="bundle.sha256", read_only=True)
    bundle_size = serializers.IntegerField(source="bundle.size", read_only=True)

    class Meta:
        model = WorkflowVersion
        fields = ["id", "workflow_id", "version", "bundle_hash", "bundle_size", "metadata", "deployed_by",
                  "created_at", "is_active", "activated_at"]


class RegisteredVersionSerializer(WorkflowVersionSerializer):
    """The answer to a bundle upload."""

    deduplicated = serializers.BooleanField(read_only=True)
    tenant = serializers.CharField(source="workflow.tenant.slug", read_only=True)
    workflow = serializers.CharField(source="workflow.slug", read_only=True)

    class Meta(WorkflowVersionSerializer.Meta):
        fields = WorkflowVersionSerializer.Meta.fields + ["tenant", "workflow", "deduplicated"]


class ActiveVersionSerializer(serializers.Serializer):
    """What to boot (DESIGN.md §5: the `/active` contract)."""

    workflow_id = serializers.IntegerField()
    version_id = serializers.IntegerField()
    version = serializers.CharField()
    bundle_url = serializers.URLField()
    bundle_hash = serializers.CharField()
    runtime = serializers.CharField()
    entrypoint = serializers.CharField()
    memory_mb = serializers.IntegerField()
    timeout_sec = serializers.IntegerField()
    deployed_at = serializers.DateTimeField(allow_null=True)
    canary = serializers.DictField(allow_null=True, required=False,
                                   help_text="The active traffic split, if any: {id, version_id, version, bundle_hash, "
                                             "weight, …}; the fields above always describe the primary.")


class BundleVersionFieldsSerializer(RejectUnknownFields, serializers.Serializer):
    """The version fields of a bundle upload: the multipart form's text fields, or `PUT`'s query string.

    Checked before anything is registered: a tenant or workflow that is no
    slug, text no column can store (NUL), an unknown field, a label past the
    column's length are 400s naming the field.
    """

    tenant = serializers.SlugField(max_length=64)
    workflow = serializers.SlugField(max_length=64, help_text="Workflow slug (created on first push).")
    version = serializers.CharField(max_length=100, help_text="Semantic version, e.g. 1.2.0.")
    metadata = serializers.CharField(required=False, allow_blank=True, help_text="JSON object.")
    sha256 = serializers.CharField(required=False, allow_blank=True, max_length=64,
                                   help_text="Expected sha256; a mismatch is refused.")
    activate = serializers.BooleanField(required=False, allow_null=True, default=None,
                                        help_text="Make the new version active (the first version always is).")
    runtime = serializers.ChoiceField(choices=Runtime.choices, required=False,
                                      help_text="Runtime of a workflow created by this push.")
    entrypoint = serializers.CharField(max_length=500, required=False,
                                       help_text="Entrypoint of a workflow created by this push.")
    create_tenant = serializers.BooleanField(
        required=False, default=False,
        help_text="Create the tenant if it does not exist (tokens bound to no tenant only); without it a "
                  "missing tenant is a 404.")


class BundleUploadFormSerializer(BundleVersionFieldsSerializer):
    """The multipart form of `POST /api/v1/bundles` (for the schema: the view streams the file itself)."""

    bundle = serializers.FileField(help_text="The .tar.gz bundle.")
