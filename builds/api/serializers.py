"""Serializers of the builds API (shapes only; validation of meaning lives in services)."""
import logging

from rest_framework import serializers

from builds.models import Artifact, Build, BuildAttempt, Job, Queue
from swarm.core.secret_box import SecretUndecryptable, read_secret
from swarm.core.serializers import RejectUnknownFields

logger = logging.getLogger(__name__)


class QueueSerializer(serializers.ModelSerializer):
    class Meta:
        model = Queue
        fields = ["id", "name", "priority", "max_concurrent", "tenant_rate_limit_per_minute", "description"]


class JobSerializer(serializers.ModelSerializer):
    """A job as the API shows it; secrets appear only as names (null when they cannot be decrypted)."""

    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True,
                                          help_text="Null for a job of no tenant (made with an admin token).")
    queue = serializers.SlugRelatedField(slug_field="name", read_only=True)
    has_scm_credential = serializers.SerializerMethodField()
    secret_names = serializers.SerializerMethodField()
    has_webhook_secret = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "name", "tenant", "description", "scm_url", "default_branch", "branch_filter", "build_config",
                  "build_tags", "queue", "enabled", "has_scm_credential", "secret_names", "has_webhook_secret", "created_at",
                  "updated_at"]

    def get_has_scm_credential(self, job) -> bool:
        return bool(job.scm_credential_encrypted)

    def get_secret_names(self, job) -> list[str] | None:
        try:
            return sorted(read_secret(job, "secrets_encrypted"))
        except SecretUndecryptable as error:
            # The job stays listable; its builds are refused at claim time (builds/claiming.py).
            logger.error("%s", error)
            return None

    def get_has_webhook_secret(self, job) -> bool:
        return bool(job.webhook_secret_encrypted)


class JobWriteSerializer(RejectUnknownFields, serializers.Serializer):
    """Fields accepted when creating or changing a job."""

    name = serializers.SlugField(max_length=100)
    tenant = serializers.SlugField(required=False, help_text="Admin tokens only; engine tokens use their own tenant.")
    description = serializers.CharField(max_length=300, required=False, allow_blank=True)
    scm_url = serializers.CharField(max_length=500)
    default_branch = serializers.CharField(
        max_length=200, required=False, allow_blank=True,
        help_text="Branch built when a trigger names none; empty (the default): the repository's default branch.")
    branch_filter = serializers.CharField(max_length=500, required=False, allow_blank=True)
    build_config = serializers.JSONField()
    build_tags = serializers.BooleanField(required=False, help_text="Build pushed tags (default false: ignored).")
    queue = serializers.SlugField(required=False)
    enabled = serializers.BooleanField(required=False)
    scm_credential = serializers.CharField(required=False, allow_blank=True, write_only=True,
                                           help_text="Token or password used to clone (never returned).")
    secrets = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, write_only=True)
    webhook_secret = serializers.CharField(max_length=200, required=False, allow_blank=True, write_only=True)


class JobUpdateSerializer(JobWriteSerializer):
    """Fields accepted when changing a job (`PATCH`): those of a new job but its tenant, which never changes."""

    tenant = None


class TriggerSerializer(RejectUnknownFields, serializers.Serializer):
    branch = serializers.CharField(max_length=200, required=False, allow_blank=True)
    commit_sha = serializers.CharField(max_length=64, required=False, allow_blank=True)
    sha = serializers.CharField(max_length=64, required=False, allow_blank=True, help_text="Alias of commit_sha.")
    params = serializers.DictField(required=False)


class AttemptSerializer(serializers.ModelSerializer):
    drone = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True,
                                         help_text="Null once the drone is deleted.")

    class Meta:
        model = BuildAttempt
        fields = ["number", "drone", "state", "failure_reason", "detail", "exit_code", "assigned_at", "started_at",
                  "finished_at", "log_size", "log_checksum", "log_checksum_reported"]


class BuildSerializer(serializers.ModelSerializer):
    job = serializers.SerializerMethodField()
    drone = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True,
                                         help_text="Null until a drone claims the build.")
    queue = serializers.SlugRelatedField(slug_field="name", read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()
    waiting_reason = serializers.SerializerMethodField(help_text=(
        "Why a pending build waits when no drone can take it (labels or the sandbox it needs); null otherwise."))

    class Meta:
        model = Build
        fields = ["id", "url", "job", "number", "commit_sha", "branch", "trigger", "triggered_by", "params", "state",
                  "failure_reason", "exit_code", "queue", "drone", "attempt_count", "retries_used", "retry_of",
                  "created_at", "assigned_at", "started_at", "finished_at", "duration_seconds", "lease_expires_at",
                  "required_labels", "waiting_reason"]

    def get_job(self, build) -> dict:
        return {"id": build.job_id, "name": build.job.name}

    def get_url(self, build) -> str:
        return f"/api/v1/builds/{build.pk}"

    def get_waiting_reason(self, build) -> str | None:
        from builds.selectors import build_waiting_reason, drones_taking_work

        if build.state != "pending":
            return None
        # One read of the fleet for a whole page of builds, not one per row.
        if getattr(self, "_fleet", None) is None:
            self._fleet = drones_taking_work()
        return build_waiting_reason(build, fleet=self._fleet)


class BuildDetailSerializer(BuildSerializer):
    attempts = AttemptSerializer(many=True, read_only=True)

    class Meta(BuildSerializer.Meta):
        fields = BuildSerializer.Meta.fields + ["attempts"]


class ArtifactSerializer(serializers.ModelSerializer):
    attempt = serializers.IntegerField(source="attempt.number", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Artifact
        fields = ["id", "name", "path", "size", "sha256", "attempt", "stored_at", "download_url"]

    def get_download_url(self, artifact) -> str:
        return f"/api/v1/builds/{artifact.build_id}/artifacts/{artifact.pk}/download"


class ClaimRequestSerializer(serializers.Serializer):
    """`POST /builds/request` body, for the schema (checked by builds.protocol.claim_request_parse)."""

    free_slots = serializers.IntegerField(min_value=0, max_value=1000, default=1)
    labels = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=64,
                                   help_text="Used only when the drone registered no labels.")


class ClaimedJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ClaimedBuildSerializer(serializers.Serializer):
    """`POST /builds/request` answer (201): what a drone needs to run the build it claimed (builds.claiming.claim_payload)."""

    id = serializers.IntegerField()
    number = serializers.IntegerField()
    attempt = serializers.IntegerField(help_text="The attempt this claim runs as; every later call names it.")
    job = ClaimedJobSerializer()
    scm_url = serializers.CharField()
    scm_credential = serializers.CharField(allow_blank=True, help_text="Token or password to clone with (or empty).")
    branch = serializers.CharField(allow_blank=True)
    commit_sha = serializers.CharField(allow_blank=True)
    image = serializers.CharField(allow_blank=True)
    steps = serializers.ListField(child=serializers.CharField())
    env = serializers.DictField(child=serializers.CharField())
    secrets = serializers.DictField(child=serializers.CharField(allow_blank=True))
    artifacts = serializers.ListField(child=serializers.CharField())
    timeout = serializers.IntegerField(help_text="Seconds the build may run.")
    log_offset = serializers.IntegerField()
    lease_seconds = serializers.IntegerField()
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    ack_timeout = serializers.IntegerField(help_text="Seconds to acknowledge with PUT .../state {state: running}.")
    update_interval = serializers.FloatField()
    cancel_grace = serializers.FloatField()
    max_log_patch_bytes = serializers.IntegerField()


class StateUpdateSerializer(serializers.Serializer):
    """`PUT /builds/<id>/state` body, for the schema (checked by builds.protocol.state_update_parse)."""

    state = serializers.ChoiceField(choices=["running", "success", "failed", "canceled"])
    attempt = serializers.IntegerField(required=False, min_value=1)
    exit_code = serializers.IntegerField(required=False, allow_null=True)
    failure_reason = serializers.CharField(required=False, allow_blank=True, max_length=64)
    log_bytesize = serializers.IntegerField(required=False, min_value=0, help_text="Required with a final state.")
    log_checksum = serializers.CharField(required=False, allow_blank=True, max_length=80)
    commit_sha = serializers.CharField(required=False, allow_blank=True, max_length=64)
    branch = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                   help_text="The branch checked out, for a build queued without one.")


class StateAnswerSerializer(serializers.Serializer):
    """`PUT /builds/<id>/state` answer: the build as it now stands (also in `Job-Status`)."""

    id = serializers.IntegerField()
    state = serializers.CharField()
    failure_reason = serializers.CharField(allow_blank=True)
    attempt = serializers.IntegerField(help_text="The build's latest attempt.")


class ArtifactAnnounceSerializer(serializers.Serializer):
    path = serializers.CharField(max_length=1000)
    size = serializers.IntegerField(min_value=0)
    sha256 = serializers.CharField(max_length=64, min_length=64)
    attempt = serializers.IntegerField(required=False, min_value=1)
