"""Serializers of the executions API (secrets never appear in any of them)."""
from rest_framework import serializers

from workflows.models import Execution, ExecutionEvent


class ExecutionSpawnSerializer(serializers.Serializer):
    env = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    inputs = serializers.DictField(required=False, default=dict)
    runtime = serializers.CharField(required=False, allow_blank=True, max_length=32,
                                    help_text="Where to run it (process, microvm, ...); default: the workflow's.")


class ExecutionSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    workflow = serializers.CharField(source="workflow.slug", read_only=True)
    workflow_id = serializers.IntegerField(read_only=True)
    version = serializers.CharField(source="version.version", read_only=True)
    bundle_hash = serializers.CharField(source="version.bundle.sha256", read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()
    events_url = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = ["id", "tenant", "workflow", "workflow_id", "version", "bundle_hash", "runtime", "status",
                  "exit_code", "env", "inputs", "timeout_sec", "spawned_by", "created_at", "started_at",
                  "finished_at", "duration_seconds", "last_seq", "url", "events_url"]

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


class ReportedEventSerializer(serializers.Serializer):
    type = serializers.CharField()
    stream = serializers.CharField(required=False, allow_blank=True)
    message = serializers.CharField(required=False, allow_blank=True)
    data = serializers.DictField(required=False)


class EventReportSerializer(serializers.Serializer):
    events = ReportedEventSerializer(many=True)
    first = serializers.IntegerField(required=False, min_value=0,
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
