"""`POST /api/v1/executions/<id>/runtime-events`: a local runtime's supervisor reports how its sandbox or VM ended.

Authenticated only by `X-Swarm-Runtime-Token` — the supervisor's own token
(scope `execution`, subject `execution_runtime`), never the boot's metadata
token, and never a bearer token. Like the metadata service it refuses a
request that passed a proxy (`X-Forwarded-For`).
"""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from swarm.core.api import ScopedAPIView, error_responses
from swarm_agent.supervisor import RUNTIME_TOKEN_HEADER
from workflows.services import runtime_reports
from workflows.api.execution_views import IsExecutionToken, MetadataTokenAuthentication


class RuntimeTokenAuthentication(MetadataTokenAuthentication):
    """Authenticate a supervisor by `X-Swarm-Runtime-Token` (its runtime token, never the metadata token)."""

    header = RUNTIME_TOKEN_HEADER
    subject_type = runtime_reports.RUNTIME_SUBJECT
    service = "The runtime report endpoint"


class RuntimeTokenScheme(OpenApiAuthenticationExtension):
    """OpenAPI description of `RuntimeTokenAuthentication`."""

    target_class = RuntimeTokenAuthentication
    name = "runtimeToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": RUNTIME_TOKEN_HEADER,
                "description": "A supervisor's token for one execution: it may only report how the sandbox or "
                               "VM ended, once."}


class RuntimeReportSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["runtime_exited"])
    data = serializers.DictField(help_text="code, reason, returncode, timeline, console_tail, ...")


class RuntimeReportResultSerializer(serializers.Serializer):
    status = serializers.CharField()
    last_seq = serializers.IntegerField()


class ExecutionRuntimeEventsView(ScopedAPIView):
    authentication_classes = [RuntimeTokenAuthentication]
    permission_classes = [IsExecutionToken]

    @extend_schema(request=RuntimeReportSerializer,
                   parameters=[OpenApiParameter(RUNTIME_TOKEN_HEADER, str, OpenApiParameter.HEADER, required=True)],
                   responses={200: RuntimeReportResultSerializer, **error_responses(400, 404)},
                   summary="Report how an execution's sandbox or VM ended (its supervisor, runtime token)")
    def post(self, request, execution_id: int):
        runtime_reports.runtime_report_target(principal=self.principal, execution_id=execution_id)
        execution = runtime_reports.execution_runtime_report(execution_id=execution_id, body=request.data)
        return Response({"status": execution.status, "last_seq": execution.last_seq})
