"""Executions API: the event tail and report, and the metadata service for the boot script.

Spawning, reading and cancelling executions are actions of the viewsets in
workflows/api/viewsets.py. `/executions/<id>/events` stays a view: its `GET`
(the tail, scoped like every read) shares the URL with the boot script's
`POST` report.

The metadata service (`/api/v1/metadata`, `/api/v1/metadata/events`,
`POST /api/v1/executions/<id>/events`) authenticates only with the
`X-Swarm-Metadata-Token` header (an `execution`-scope token bound to one
execution), and refuses any request that carries `X-Forwarded-For`: a proxy
in between means the request did not come straight from the sandbox (the
IMDSv2 lesson: a server-side request forgery through a proxy must not be
able to read secrets).
"""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from swarm.core.api import ScopedAPIView, error_responses
from swarm.core.auth_limits import authenticate_token_limited
from swarm.core.authentication import principal_from_token
from swarm.core.choices import TokenScope
from swarm.core.errors import ApiError, NotFound
from swarm.core.inputs import query_int
from workflows import execution_selectors, services
from workflows.api.execution_serializers import (
    EventReportResultSerializer,
    EventReportSerializer,
    ExecutionEventPageSerializer,
    ExecutionEventSerializer,
    MetadataSerializer,
)
from workflows.models import Execution

METADATA_TOKEN_HEADER = "X-Swarm-Metadata-Token"


class ForwardedRequestRefused(ApiError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forwarded_request_refused"


class MetadataTokenAuthentication(BaseAuthentication):
    """Authenticate the boot script by `X-Swarm-Metadata-Token` (never by Authorization).

    Subclasses name another header and token subject (the supervisor's runtime token).
    """

    header = METADATA_TOKEN_HEADER
    subject_type = "execution"
    service = "The metadata service"

    def authenticate(self, request):
        if "HTTP_X_FORWARDED_FOR" in request.META:
            raise ForwardedRequestRefused(
                f"{self.service} refuses requests that passed through a proxy (X-Forwarded-For is set)."
            )
        plaintext = request.META.get("HTTP_" + self.header.upper().replace("-", "_"), "").strip()
        if not plaintext:
            raise exceptions.NotAuthenticated(f"The {self.header} header is required.")
        token = authenticate_token_limited(
            request=request, plaintext=plaintext,
            accept=lambda token: token.scope == TokenScope.EXECUTION and token.subject_type == self.subject_type)
        if token is None:
            raise exceptions.AuthenticationFailed(f"Invalid, expired or revoked {self.header} token.")
        return principal_from_token(token), token

    def authenticate_header(self, request) -> str:
        return self.header


class MetadataTokenScheme(OpenApiAuthenticationExtension):
    """OpenAPI description of `MetadataTokenAuthentication` (the boot script's header token)."""

    target_class = MetadataTokenAuthentication
    name = "metadataToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": METADATA_TOKEN_HEADER,
                "description": "An execution-scope token bound to one execution (handed to its boot script); "
                               "requests carrying X-Forwarded-For are refused."}


class IsExecutionToken(BasePermission):
    def has_permission(self, request, view) -> bool:
        return getattr(request.user, "scope", None) == TokenScope.EXECUTION


class MetadataView(ScopedAPIView):
    """Base for endpoints the boot script calls with its metadata token."""

    authentication_classes = [MetadataTokenAuthentication]
    permission_classes = [IsExecutionToken]

    def token_execution(self, execution_id: int | None = None) -> Execution:
        """The execution the token is bound to; a token of another execution gets a 404."""
        return token_execution(self.principal, execution_id)


def token_execution(principal, execution_id: int | None = None) -> Execution:
    """The execution a metadata token is bound to; asking about another execution is a 404."""
    bound = int(principal.subject_id)
    if execution_id is not None and execution_id != bound:
        raise NotFound(f"No execution {execution_id}.")
    execution = Execution.objects.select_related("workflow", "version__bundle").filter(pk=bound).first()
    if execution is None:
        raise NotFound(f"No execution {bound}.")
    return execution


def _tail_page(execution: Execution, after: int) -> dict:
    events = list(execution_selectors.execution_events_after(execution, after=after))
    return {
        "execution_id": execution.pk,
        "status": execution.status,
        "exit_code": execution.exit_code,
        "finished": execution.is_finished,
        "next_after": events[-1].seq if events else after,
        "events": ExecutionEventSerializer(events, many=True).data,
    }


class ExecutionEventsView(ScopedAPIView):
    """`GET` tails events (engine/read/admin tokens); `POST` reports events (the execution's metadata token)."""

    def _is_report(self) -> bool:
        request = getattr(self, "request", None)
        return request is not None and request.method == "POST"

    def get_authenticators(self):
        if self._is_report():
            return [MetadataTokenAuthentication()]
        return super().get_authenticators()

    def get_permissions(self):
        if self._is_report():
            return [IsExecutionToken()]
        return super().get_permissions()

    @extend_schema(parameters=[OpenApiParameter("after", int, description="Only events with seq > after.")],
                   responses={200: ExecutionEventPageSerializer, **error_responses(400, 404)},
                   summary="Tail an execution's events")
    def get(self, request, execution_id: int):
        # `after` is the tail's cursor (not a list filter): parsed by the one strict integer helper.
        execution = execution_selectors.execution_get(self.principal, execution_id)
        return Response(_tail_page(execution, query_int(request, "after", default=0)))

    @extend_schema(request=EventReportSerializer,
                   parameters=[OpenApiParameter(METADATA_TOKEN_HEADER, str, OpenApiParameter.HEADER, required=True)],
                   responses={200: EventReportResultSerializer, **error_responses(400, 404, 409)},
                   summary="Report events and output (boot script, metadata token)")
    def post(self, request, execution_id: int):
        execution = token_execution(self.principal, execution_id)
        return _report(execution, request.data)


def _report(execution: Execution, body) -> Response:
    report = EventReportSerializer(data=body)
    report.is_valid(raise_exception=True)
    events = report.validated_data["events"]
    execution = services.execution_report(execution=execution, events=events,
                                          first=report.validated_data.get("first"))
    return Response({"accepted": len(events), "status": execution.status, "last_seq": execution.last_seq})


class MetadataServiceView(MetadataView):
    @extend_schema(parameters=[OpenApiParameter(METADATA_TOKEN_HEADER, str, OpenApiParameter.HEADER, required=True)],
                   responses={200: MetadataSerializer, **error_responses(409)},
                   summary="What the boot script needs: bundle URL and hash, env and secrets")
    def get(self, request):
        execution = self.token_execution()
        body = services.execution_metadata_serve(execution=execution,
                                                           remote_addr=request.META.get("REMOTE_ADDR", ""))
        return Response(body, headers={"Cache-Control": "no-store"})


class MetadataEventsView(MetadataView):
    @extend_schema(request=EventReportSerializer,
                   parameters=[OpenApiParameter(METADATA_TOKEN_HEADER, str, OpenApiParameter.HEADER, required=True)],
                   responses={200: EventReportResultSerializer, **error_responses(400, 409)},
                   summary="Report events and output of the token's execution")
    def post(self, request):
        return _report(self.token_execution(), request.data)
