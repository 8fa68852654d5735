"""Serializers of the executions API (secrets never appear in any of them)."""
from rest_framework import serializers

from swarm.core.inputs import MAX_INT32
from swarm.core.serializers import MIN_INT32, RejectUnknownFields, StrictCharField
from workflows.choices import BOOT_REPORTED_EVENTS, ExecutionEventType, OutputStream
from workflows.models import Execution, ExecutionEvent
from workflows.services.boot import MAX_EVENTS_PER_REPORT


class ExecutionSpawnSerializer(RejectUnknownFields, serializers.Serializer):
    env = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    inputs = serializers.DictField(required=False, default=dict)
    runtime = serializers.CharField(required=False, allow_blank=True, max_length=32,
                                    help_text="Where to run it (process, microvm, ...); default: the workflow's.")
    labels = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=64,
                                   help_text="The drone runtime only: labels a drone needs to claim it "
                                             "(default: the workflow's drone_labels).")


class ExecutionSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    workflow = serializers.CharField(source="workflow.slug", read_only=True)
    workflow_id = serializers.IntegerField(read_only=True)
    version = serializers.CharField(source="version.version", read_only=True)
    bundle_hash = serializers.CharField(source="version.bundle.sha256", read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()
    events_url = serializers.SerializerMethodField()
    drone = serializers.CharField(source="drone.name", read_only=True, allow_null=True, default=None,
                                  help_text="The drone runtime: the drone that claimed it.")
    waiting = serializers.SerializerMethodField(
        help_text="The drone runtime, while queued: {reason, required_labels, drones_connected, drones_matching, "
                  "drones_with_free_slot}; null otherwise.")

    class Meta:
        model = Execution
        fields = ["id", "tenant", "workflow", "workflow_id", "version", "bundle_hash", "runtime", "status",
                  "exit_code", "env", "inputs", "timeout_sec", "spawned_by", "created_at", "started_at",
                  "finished_at", "duration_seconds", "last_seq", "url", "events_url", "required_labels", "drone",
                  "waiting"]

    def get_waiting(self, execution: Execution) -> dict | None:
        if execution.status != "queued":
            return None
        return (execution.runtime_state or {}).get("waiting")

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def get_url(self, execution: Execution) -> str:
        return self._absolute(f"/api/v1/executions/{execution.pk}")

    def get_events_url(self, execution: Execution) -> str:
        return self._absolute(f"/api/v1/executions/{execution.pk}/events")


class ExecutionEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExecutionEvent
        fields = ["seq", "type", "at", "stream", "message", "data"]


class ExecutionEventPageSerializer(serializers.Serializer):
    execution_id = serializers.IntegerField()
    status = serializers.CharField()
    exit_code = serializers.IntegerField(allow_null=True)
    finished = serializers.BooleanField()
    next_after = serializers.IntegerField(help_text="Pass as ?after= to get only newer events.")
    events = ExecutionEventSerializer(many=True)


class EventTypeField(serializers.ChoiceField):
    """The type of a reported event: only those the boot script may report (`BOOT_REPORTED_EVENTS`)."""

    def __init__(self, **kwargs):
        super().__init__(choices=sorted(BOOT_REPORTED_EVENTS), **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str) or data not in self.choices:
            raise serializers.ValidationError(
                f"{data!r:.40} is not an event type the boot script may report; one of "
                f"{', '.join(self.choices)}.", code="invalid_event_type")
        return data


class ReportedEventSerializer(RejectUnknownFields, serializers.Serializer):
    """One event the boot script reports: `type`, and for output lines `stream` and the line as `message`."""

    type = EventTypeField()
    stream = serializers.ChoiceField(choices=OutputStream.choices, required=False, allow_blank=True, default="")
    # Output lines keep their leading and trailing blanks.
    message = StrictCharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    data = serializers.DictField(required=False, default=dict)

    def validate(self, attrs):
        if attrs["type"] == ExecutionEventType.EXITED:
            exit_code = attrs["data"].get("exit_code")
            if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not MIN_INT32 <= exit_code <= MAX_INT32:
                raise serializers.ValidationError({"data": {"exit_code": [serializers.ErrorDetail(
                    f"an exited event carries data.exit_code, an integer from {MIN_INT32} to {MAX_INT32}",
                    code="invalid")]}})
        return attrs


class EventReportSerializer(RejectUnknownFields, serializers.Serializer):
    """The body of `POST /metadata/events` and `POST /executions/<id>/events`."""

    events = ReportedEventSerializer(many=True, allow_empty=False, max_length=MAX_EVENTS_PER_REPORT)
    first = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1,
                                     help_text="Index of the first event among all the boot reported: a retried "
                                               "batch is stored once.")


class EventReportResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    status = serializers.CharField()
    last_seq = serializers.IntegerField()


class MetadataSerializer(serializers.Serializer):
    execution_id = serializers.IntegerField()
    bundle_url = serializers.URLField()
    bundle_hash = serializers.CharField()
    bundle_size = serializers.IntegerField()
    runtime = serializers.CharField()
    entrypoint = serializers.CharField()
    memory_mb = serializers.IntegerField()
    timeout_sec = serializers.IntegerField()
    env = serializers.DictField(child=serializers.CharField())
    inputs = serializers.DictField()
    secrets = serializers.DictField(child=serializers.CharField())
