"""Drone API: agent endpoints (register, heartbeat), provisioning, and the fleet seed API."""
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from drones import selectors, services
from drones.api.serializers import (
    DroneSerializer,
    EscalationEventSerializer,
    HeartbeatAnswerSerializer,
    HeartbeatSerializer,
    PingAllSerializer,
    PingResultSerializer,
    PingStatusSerializer,
    RegisteredSerializer,
    RegisterSerializer,
    SetTypeSerializer,
)
from drones.provisioning import agent_package_bytes, agent_wheel_bytes, bootstrap_script
from drones.services.heartbeat import run_heartbeat_hooks
from swarm.core.api import ScopedAPIView, error_responses, takes_no_body
from swarm.core.authentication import authenticate_token, principal_from_token
from swarm.core.errors import ApiError, NotFound
from swarm.core.choices import TokenScope
from swarm.core.pagination import page_response
from swarm.core.principals import READ_SCOPES

ADMIN_ONLY = frozenset({TokenScope.ADMIN})
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="swarm"'}
ERRORS = error_responses(400, 404)


class FleetAPIView(ScopedAPIView):
    """Fleet endpoints: anyone with a read/engine/admin token reads; only admin writes."""

    read_scopes = READ_SCOPES
    write_scopes = ADMIN_ONLY


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
        body = request.data
        if not isinstance(body, dict):
            raise ApiError("The heartbeat body must be a JSON object.", code="invalid")
        metrics = body.get("metrics", {})
        answer = services.drone_heartbeat(token=token.strip(), metrics=metrics)
        if answer is None:
            self._refuse(token.strip())
        drone_id = answer.pop("drone_id")
        answer.update(run_heartbeat_hooks(drone_id=drone_id, body=body))
        return Response(answer)

    @staticmethod
    def _refuse(token: str):
        """Why a token did not heartbeat: unknown/revoked (401), not a drone token (403), drone gone (404)."""
        stored = authenticate_token(token)
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


# --- Fleet (seed API) --------------------------------------------------------------


class DroneListView(FleetAPIView):
    """`GET /api/v1/drones`."""

    @extend_schema(responses={200: DroneSerializer(many=True), **ERRORS},
                   summary="List drones")
    def get(self, request):
        return page_response(request, selectors.drone_list(), DroneSerializer)


class DroneDetailView(FleetAPIView):
    """`GET /api/v1/drones/<name>`."""

    @extend_schema(responses={200: DroneSerializer, **ERRORS}, summary="One drone")
    def get(self, request, name):
        return Response(DroneSerializer(selectors.drone_get(name=name)).data)


class PingStatusView(FleetAPIView):
    """`GET /api/v1/ping`: ping status of every drone."""

    @extend_schema(responses={200: PingStatusSerializer(many=True), **ERRORS},
                   summary="Ping status of all drones")
    def get(self, request):
        return page_response(request, selectors.drone_list(), PingStatusSerializer)


class PingAllView(FleetAPIView):
    """`POST /api/v1/ping/all`: push a ping to every drone; results show in `GET /ping`."""

    @extend_schema(request=None, responses={202: PingAllSerializer, **ERRORS}, summary="Ping every drone")
    @takes_no_body
    def post(self, request):
        return Response({"pinged": services.drone_ping_all()}, status=status.HTTP_202_ACCEPTED)


class EscalationListView(FleetAPIView):
    """`GET /api/v1/escalation[?drone=<name>]`: the latest ladder steps."""

    @extend_schema(parameters=[OpenApiParameter("drone", str, required=False)],
                   responses={200: EscalationEventSerializer(many=True), **ERRORS}, summary="Escalation events")
    def get(self, request):
        name = request.query_params.get("drone")
        drone = selectors.drone_get(name=name) if name else None
        return page_response(request, selectors.escalation_event_list(drone=drone), EscalationEventSerializer)


class DronePingView(FleetAPIView):
    """`POST /api/v1/drones/<name>/ping`: ping and wait for the pong; returns the latency."""

    @extend_schema(request=None, responses={200: PingResultSerializer, **ERRORS}, summary="Ping one drone")
    @takes_no_body
    def post(self, request, name):
        return Response(services.drone_ping(drone=selectors.drone_get(name=name)))


class DroneResetEscalationView(FleetAPIView):
    """`POST /api/v1/drones/<name>/reset-escalation`."""

    @extend_schema(request=None, responses={200: DroneSerializer, **ERRORS}, summary="Reset the escalation level")
    @takes_no_body
    def post(self, request, name):
        drone = services.drone_reset_escalation(drone=selectors.drone_get(name=name), actor=self.principal)
        return Response(DroneSerializer(drone).data)


class DroneSetTypeView(FleetAPIView):
    """`POST /api/v1/drones/<name>/set-type {"drone_type": ...}`."""

    @extend_schema(request=SetTypeSerializer, responses={200: DroneSerializer, **ERRORS}, summary="Set drone type")
    def post(self, request, name):
        drone = selectors.drone_get(name=name)
        serializer = SetTypeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        drone = services.drone_set_type(drone=drone, drone_type=serializer.validated_data["drone_type"],
                                        actor=self.principal)
        return Response(DroneSerializer(drone).data)


class DronePauseView(FleetAPIView):
    """`POST /api/v1/drones/<name>/pause`."""

    @extend_schema(request=None, responses={200: DroneSerializer, **ERRORS}, summary="Pause a drone")
    @takes_no_body
    def post(self, request, name):
        drone = services.drone_pause(drone=selectors.drone_get(name=name), actor=self.principal)
        return Response(DroneSerializer(drone).data)


class DroneResumeView(FleetAPIView):
    """`POST /api/v1/drones/<name>/resume`."""

    @extend_schema(request=None, responses={200: DroneSerializer, **ERRORS}, summary="Resume a drone")
    @takes_no_body
    def post(self, request, name):
        drone = services.drone_resume(drone=selectors.drone_get(name=name), actor=self.principal)
        return Response(DroneSerializer(drone).data)


class DroneDrainView(FleetAPIView):
    """`POST /api/v1/drones/<name>/drain`."""

    @extend_schema(request=None, responses={200: DroneSerializer, **ERRORS}, summary="Drain a drone")
    @takes_no_body
    def post(self, request, name):
        drone = services.drone_drain(drone=selectors.drone_get(name=name), actor=self.principal)
        return Response(DroneSerializer(drone).data)
