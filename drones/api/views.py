"""Drone API views: agent endpoints (register, heartbeat) and provisioning (the fleet seed API: api/viewsets.py)."""
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from drones import selectors, services
from drones.api.serializers import (
    HeartbeatAnswerSerializer,
    HeartbeatSerializer,
    RegisteredSerializer,
    RegisterSerializer,
)
from drones.protocol import heartbeat_parse
from drones.provisioning import agent_package_bytes, agent_wheel_bytes, bootstrap_script
from drones.services.heartbeat import run_heartbeat_hooks
from swarm.core.api import ScopedAPIView, error_responses
from swarm.core.auth_limits import authenticate_token_limited
from swarm.core.authentication import principal_from_token
from swarm.core.errors import ApiError, NotFound

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="swarm"'}
ERRORS = error_responses(400, 404)


# --- Agent-facing -------------------------------------------------------------


class DroneRegisterView(APIView):
    """`POST /api/v1/drones/register`: a join token buys a drone token (re-registering rotates it)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=RegisterSerializer, responses={201: RegisteredSerializer, 200: RegisteredSerializer,
                                                          **ERRORS},
                   summary="Register a drone with a join token")
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        registration = services.drone_register(**serializer.validated_data)
        drone = registration.drone
        body = {"drone_id": drone.pk, "name": drone.name, "token": registration.token,
                "drone_type": drone.drone_type, **services.drone_intervals()}
        return Response(body, status=status.HTTP_201_CREATED if registration.created else status.HTTP_200_OK)


class DroneHeartbeatView(ScopedAPIView):
    """`POST /api/v1/drones/heartbeat`: the agent is alive; the answer says run, pause, drain or stop.

    The fleet's hottest endpoint, so it does not go through DroneAgentAPIView:
    a valid drone token is checked and the heartbeat recorded in one SQL
    statement (drones.services.drone_heartbeat). Only when that finds nothing
    does the usual authentication run, to answer the precise 401/403/404.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=HeartbeatSerializer, responses={200: HeartbeatAnswerSerializer, **ERRORS},
                   summary="Drone heartbeat")
    def post(self, request):
        keyword, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if keyword.lower() != "bearer" or not token.strip():
            raise ApiError("Send the drone token as 'Authorization: Bearer <token>'.", code="not_authenticated",
                           status_code=401, headers=BEARER_CHALLENGE)
        heartbeat = heartbeat_parse(request.data)
        answer = services.drone_heartbeat(token=token.strip(), heartbeat=heartbeat)
        if answer is None:
            self._refuse(request, token.strip())
        drone_id = answer.pop("drone_id")
        answer.update(run_heartbeat_hooks(drone_id=drone_id, body=heartbeat))
        return Response(answer)

    @staticmethod
    def _refuse(request, token: str):
        """Why a token did not heartbeat: unknown/revoked (401), not a drone token (403), drone gone (404).

        Behind the failed-authentication limits (swarm/core/auth_limits.py) like every other token check;
        a heartbeat that succeeds never reaches here, so the hot path pays nothing for them.
        """
        stored = authenticate_token_limited(request=request, plaintext=token)
        if stored is None:
            raise ApiError("Invalid, expired or revoked token.", code="authentication_failed", status_code=401,
                           headers=BEARER_CHALLENGE)
        selectors.drone_for_principal(principal_from_token(stored))  # raises 403 or 404
        raise NotFound("The drone this token belongs to no longer exists.")


class BootstrapScriptView(APIView):
    """`GET /api/v1/provision/bootstrap?token=<join token>`: a shell script that installs and registers the agent."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(parameters=[OpenApiParameter("token", str, required=True, description="join token")],
                   responses={(200, "text/x-shellscript"): OpenApiTypes.STR, **ERRORS},
                   summary="Bootstrap script for a new drone")
    def get(self, request):
        plaintext = request.query_params.get("token", "")
        token = services.join_token_check(plaintext=plaintext, field="token")
        services.join_token_mark_script_fetched(token=token)
        script = bootstrap_script(server_url=request.build_absolute_uri("/").rstrip("/"), join_token=plaintext)
        return HttpResponse(script, content_type="text/x-shellscript; charset=utf-8")


class AgentPackageView(APIView):
    """`GET /api/v1/provision/agent.tar.gz?token=<join token>`: the swarm-agent source package (pip installable)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(parameters=[OpenApiParameter("token", str, required=True, description="join token")],
                   responses={(200, "application/gzip"): OpenApiTypes.BINARY, **ERRORS},
                   summary="Download the agent package")
    def get(self, request):
        services.join_token_check(plaintext=request.query_params.get("token", ""), field="token")
        package, version = agent_package_bytes()
        response = HttpResponse(package, content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="swarm-agent-{version}.tar.gz"'
        return response


class AgentWheelView(APIView):
    """`GET /api/v1/provision/agent.whl?token=<join token>`: the swarm-agent wheel the bootstrap script installs."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(parameters=[OpenApiParameter("token", str, required=True, description="join token")],
                   responses={(200, "application/zip"): OpenApiTypes.BINARY, **ERRORS},
                   summary="Download the agent wheel")
    def get(self, request):
        services.join_token_check(plaintext=request.query_params.get("token", ""), field="token")
        wheel, filename = agent_wheel_bytes()
        response = HttpResponse(wheel, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
