"""`/api/v1/workflows/<id>/canary[/promote|/revert]`: a weighted split between the active version and a candidate.

A ViewSet whose verbs are `@action`s; tenant-owned like its workflow
(another tenant's workflow is a 404, a read token may only look).
"""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from swarm.core.api import error_responses, takes_no_body
from swarm.core.errors import NotFound
from swarm.core.permissions import HasScope, request_principal
from workflows import selectors, services
from workflows.models import WorkflowCanary
from workflows.services.canary import canary_failure_rate


class CanaryStartSerializer(serializers.Serializer):
    version_id = serializers.IntegerField()
    weight = serializers.IntegerField(min_value=1, max_value=99, help_text="Percent of spawns for the candidate")
    auto_promote = serializers.BooleanField(default=False)
    failure_rate_threshold = serializers.FloatField(default=0.1, min_value=0, max_value=1)
    min_executions = serializers.IntegerField(default=10, min_value=1)


class CanarySerializer(serializers.ModelSerializer):
    version = serializers.CharField(source="candidate.version")
    version_id = serializers.IntegerField(source="candidate_id")
    primary_version = serializers.CharField(source="primary.version")
    finished_executions = serializers.SerializerMethodField()
    failed_executions = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowCanary
        fields = ["id", "workflow_id", "version_id", "version", "primary_version", "weight", "auto_promote",
                  "failure_rate_threshold", "min_executions", "state", "reason", "finished_executions",
                  "failed_executions", "created_by", "created_at", "finished_at"]

    def _rate(self, canary) -> tuple[int, int]:
        if not hasattr(canary, "_rate"):
            canary._rate = canary_failure_rate(canary=canary)
        return canary._rate

    def get_finished_executions(self, canary) -> int:
        return self._rate(canary)[0]

    def get_failed_executions(self, canary) -> int:
        return self._rate(canary)[1]


class WorkflowCanaryViewSet(viewsets.ViewSet):
    """The workflow's canary: start one, read it, promote or revert it."""

    permission_classes = [HasScope]

    def _workflow(self, workflow_id: int):
        return selectors.workflow_get(request_principal(self.request), workflow_id)

    @extend_schema(responses={200: CanarySerializer, **error_responses(404)},
                   summary="The workflow's latest canary (404 when it never had one)")
    def retrieve(self, request, workflow_id: int):
        canary = WorkflowCanary.objects.filter(workflow=self._workflow(workflow_id)).select_related(
            "candidate", "primary").first()
        if canary is None:
            raise NotFound(f"Workflow {workflow_id} has no canary.", code="no_canary")
        return Response(CanarySerializer(canary).data)

    @extend_schema(request=CanaryStartSerializer, responses={201: CanarySerializer, **error_responses(400, 404, 409)},
                   summary="Split spawns between the active version and a candidate",
                   description="409 canary_exists (one at a time), already_active, no_active_version.")
    def create(self, request, workflow_id: int):
        workflow = self._workflow(workflow_id)
        serializer = CanaryStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = selectors.version_get(workflow, data["version_id"])
        canary = services.workflow_canary_start(
            principal=request_principal(request), workflow=workflow, version=version, weight=data["weight"],
            auto_promote=data["auto_promote"], failure_rate_threshold=data["failure_rate_threshold"],
            min_executions=data["min_executions"])
        return Response(CanarySerializer(canary).data, status=201)

    @extend_schema(request=None, responses={200: CanarySerializer, **error_responses(404, 409)},
                   summary="Make the candidate the active version (409 no_active_canary)")
    @action(detail=False, methods=["post"])
    @takes_no_body
    def promote(self, request, workflow_id: int):
        canary = services.workflow_canary_promote(principal=request_principal(request),
                                                  workflow=self._workflow(workflow_id))
        return Response(CanarySerializer(canary).data)

    @extend_schema(request=None, responses={200: CanarySerializer, **error_responses(404, 409)},
                   summary="End the split: every spawn runs the active version (409 no_active_canary)")
    @action(detail=False, methods=["post"])
    @takes_no_body
    def revert(self, request, workflow_id: int):
        canary = services.workflow_canary_revert(principal=request_principal(request),
                                                 workflow=self._workflow(workflow_id))
        return Response(CanarySerializer(canary).data)
