"""Serializers of the payload API (types, versions, releases, rollouts, drift, agent reports)."""
from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from drones.payloads.engine import rollout_progress
from drones.payloads.models import DronePayloadState, PayloadEvent, PayloadType, PayloadVersion, Release, Rollout, \
    RolloutTarget


class PayloadTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = PayloadType
        fields = ["id", "name", "description", "install_root", "health_check", "health_command", "health_url",
                  "health_timeout", "restarts_agent", "keep_releases", "auto_reconcile", "created_at"]
        read_only_fields = ["id", "created_at"]


class PayloadVersionSerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="payload_type.name", read_only=True)
    sha256 = serializers.CharField(source="bundle.sha256", read_only=True)
    size = serializers.IntegerField(source="bundle.size", read_only=True)

    class Meta:
        model = PayloadVersion
        fields = ["id", "type", "version", "sha256", "size", "notes", "created_by", "created_at"]


class PushedPayloadSerializer(PayloadVersionSerializer):
    deduplicated = serializers.BooleanField(read_only=True)

    class Meta(PayloadVersionSerializer.Meta):
        fields = [*PayloadVersionSerializer.Meta.fields, "deduplicated"]


class PayloadPushFormSerializer(serializers.Serializer):
    """`POST /payload-versions` multipart form (for the schema; the view reads the stream itself)."""

    bundle = serializers.FileField(help_text="The .tar.gz (packed reproducibly by `swarmctl payload push`).")
    type = serializers.CharField(help_text="Payload type name (created with defaults when new).")
    version = serializers.CharField(help_text="semver or vYYYY.MM.DD[.N]")
    notes = serializers.CharField(required=False, allow_blank=True)
    sha256 = serializers.CharField(required=False, help_text="Declared digest, checked against the bytes.")


class ReleaseSerializer(serializers.ModelSerializer):
    manifest_url = serializers.SerializerMethodField()

    class Meta:
        model = Release
        fields = ["id", "name", "manifest", "manifest_sha256", "manifest_url", "notes", "created_by", "created_at"]

    def get_manifest_url(self, release) -> str:
        return reverse("release-manifest", kwargs={"name": release.name})


class ReleaseCreateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, help_text="vYYYY.MM.DD[.N]; default: the next "
                                                                              "free one of today")
    from_current = serializers.BooleanField(default=False, help_text="Start from what the fleet runs now")
    payloads = serializers.DictField(child=serializers.CharField(), required=False, default=dict,
                                     help_text="type → version label (overrides --from-current)")
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class RolloutTargetSpecSerializer(serializers.Serializer):
    all = serializers.BooleanField(default=False)
    labels = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    names = serializers.ListField(child=serializers.CharField(), required=False, default=list)


class RolloutCreateSerializer(serializers.Serializer):
    """Start a rollout of a payload version (`payload_type` + `version`, or `payload_version_id`) or a release."""

    payload_type = serializers.CharField(required=False)
    version = serializers.CharField(required=False)
    payload_version_id = serializers.IntegerField(required=False)
    release = serializers.CharField(required=False, help_text="Release name")
    target = RolloutTargetSpecSerializer()
    max_parallel = serializers.IntegerField(default=1, min_value=1)
    canary = serializers.IntegerField(default=0, min_value=0)
    min_healthy_time = serializers.FloatField(default=10.0, min_value=0)
    healthy_deadline = serializers.FloatField(default=300.0, min_value=0)
    progress_deadline = serializers.FloatField(default=600.0, min_value=0)
    auto_revert = serializers.BooleanField(default=False)
    auto_promote = serializers.BooleanField(default=False)
    failure_budget = serializers.CharField(default="0", help_text="Failed drones tolerated: 3 or 10%")


class RolloutSerializer(serializers.ModelSerializer):
    subject = serializers.CharField(source="subject_label", read_only=True)
    release = serializers.SlugRelatedField(slug_field="name", read_only=True)
    payload_version = PayloadVersionSerializer(read_only=True)
    url = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Rollout
        fields = ["id", "url", "subject", "release", "payload_version", "state", "state_reason", "target_all",
                  "target_labels", "target_names", "max_parallel", "canary", "min_healthy_time", "healthy_deadline",
                  "progress_deadline", "auto_revert", "auto_promote", "failure_budget", "failure_budget_is_percent",
                  "is_reconcile", "promoted_at", "created_by", "created_at", "started_at", "finished_at",
                  "progress"]

    def get_url(self, rollout) -> str:
        return reverse("rollout-detail", kwargs={"pk": rollout.pk})

    def get_progress(self, rollout) -> dict:
        return rollout_progress(rollout)


class RolloutTargetSerializer(serializers.ModelSerializer):
    drone = serializers.CharField(source="drone.name")
    type = serializers.CharField(source="payload_version.payload_type.name")
    version = serializers.CharField(source="payload_version.version")

    class Meta:
        model = RolloutTarget
        fields = ["id", "drone", "type", "version", "state", "reason", "is_canary", "revert_state", "dispatched_at",
                  "healthy_at", "state_changed_at"]


class PayloadEventSerializer(serializers.ModelSerializer):
    drone = serializers.CharField(source="drone.name", default=None)
    type = serializers.CharField(source="payload_type.name", default=None)

    class Meta:
        model = PayloadEvent
        fields = ["id", "kind", "rollout_id", "target_id", "drone", "type", "from_state", "to_state", "detail",
                  "actor", "at"]


class DronePayloadStateSerializer(serializers.ModelSerializer):
    drone = serializers.CharField(source="drone.name")
    type = serializers.CharField(source="payload_type.name")
    desired_version = serializers.CharField(source="desired_version.version", default=None)
    desired_sha256 = serializers.CharField(source="desired_version.bundle.sha256", default=None)

    class Meta:
        model = DronePayloadState
        fields = ["drone", "type", "desired_version", "desired_sha256", "reported_sha256", "reported_at", "drifted",
                  "drift_since", "drift_detail"]


class AcceptedSerializer(serializers.Serializer):
    """202 answer of an async verb: where to follow the rollout."""

    id = serializers.IntegerField()
    url = serializers.CharField()
    state = serializers.CharField()


class AgentReportStateSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["downloading", "installing", "verifying", "succeeded", "failed"])
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    at = serializers.FloatField(required=False)


class AgentReportSerializer(serializers.Serializer):
    """`POST /payloads/agent/report`: what the agent did with one deploy_payload command."""

    target_id = serializers.IntegerField(min_value=1)
    action = serializers.ChoiceField(choices=["deploy", "revert"], default="deploy")
    states = AgentReportStateSerializer(many=True, min_length=1, max_length=20)
    current_sha256 = serializers.RegexField(r"^([0-9a-f]{64})?$", required=False, allow_blank=True,
                                            help_text="The sha256 `current` points at after this report (may be empty)")


class DriftReconcileSerializer(serializers.Serializer):
    drone = serializers.CharField(required=False, help_text="Only this drone (name)")
    type = serializers.CharField(required=False, help_text="Only this payload type")
