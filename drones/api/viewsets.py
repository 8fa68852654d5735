"""Fleet API (the seed endpoints): drones and their verbs, ping status, the escalation ladder, as viewsets.

The fleet belongs to no tenant: any admin, engine or read token reads it
(`SwarmViewSet`, not tenant-scoped); only admin tokens change it. The agent
endpoints (register, heartbeat) and provisioning downloads are plain views
(drones/api/views.py).
"""
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from drones import selectors, services
from drones.api.filters import EscalationEventFilter
from drones.api.serializers import (
    DroneSerializer,
    EscalationEventSerializer,
    PingAllSerializer,
    PingResultSerializer,
    PingStatusSerializer,
    SetTypeSerializer,
)
from drones.models import EscalationEvent
from swarm.core.api import error_responses, takes_no_body
from swarm.core.choices import TokenScope
from swarm.core.principals import READ_SCOPES
from swarm.core.viewsets import NAME_PATTERN, SwarmViewSet

ERRORS = error_responses(400, 404)


class FleetViewSet(SwarmViewSet):
    """Fleet resources: anyone with a read/engine/admin token reads; only admin writes."""

    read_scopes = READ_SCOPES
    write_scopes = frozenset({TokenScope.ADMIN})


class DroneViewSet(FleetViewSet):
    """`/drones`, `/drones/<name>` and the operator's verbs on one drone."""

    queryset = selectors.drone_list()
    serializer_class = DroneSerializer
    lookup_field = "name"
    lookup_value_regex = NAME_PATTERN

    def get_object(self):
        return selectors.drone_get(name=self.kwargs["name"])

    @extend_schema(responses={200: DroneSerializer(many=True), **ERRORS}, summary="List drones")
    def list(self, request):
        """`GET /api/v1/drones`."""
        return self.list_page()

    @extend_schema(responses={200: DroneSerializer, **ERRORS}, summary="One drone")
    def retrieve(self, request, name: str):
        """`GET /api/v1/drones/<name>`."""
        return Response(DroneSerializer(self.get_object()).data)

    @extend_schema(request=None, responses={200: PingResultSerializer, **ERRORS}, summary="Ping one drone")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def ping(self, request, name: str):
        """`POST /api/v1/drones/<name>/ping`: ping and wait for the pong; returns the latency."""
        return Response(services.drone_ping(drone=self.get_object()))

    @extend_schema(request=None, responses={200: DroneSerializer, **ERRORS}, summary="Reset the escalation level")
    @action(detail=True, methods=["post"], url_path="reset-escalation", url_name="reset-escalation")
    @takes_no_body
    def reset_escalation(self, request, name: str):
        """`POST /api/v1/drones/<name>/reset-escalation`."""
        drone = services.drone_reset_escalation(drone=self.get_object(), actor=self.principal)
        return Response(DroneSerializer(drone).data)

    @extend_schema(request=SetTypeSerializer, responses={200: DroneSerializer, **ERRORS}, summary="Set drone type")
    @action(detail=True, methods=["post"], url_path="set-type", url_name="set-type")
    def set_type(self, request, name: str):
        """`POST /api/v1/drones/<name>/set-type {"drone_type": ...}`."""
        drone = self.get_object()
        serializer = SetTypeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        drone = services.drone_set_type(drone=drone, drone_type=serializer.validated_data["drone_type"],
                                        actor=self.principal)
        return Response(DroneSerializer(drone).data)

    @extend_schema(request=None, responses={200: DroneSerializer, **ERRORS}, summary="Pause a drone")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def pause(self, request, name: str):
        """`POST /api/v1/drones/<name>/pause`."""
        return Response(DroneSerializer(services.drone_pause(drone=self.get_object(), actor=self.principal)).data)

    @extend_schema(request=None, responses={200: DroneSerializer, **ERRORS}, summary="Resume a drone")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def resume(self, request, name: str):
        """`POST /api/v1/drones/<name>/resume`."""
        return Response(DroneSerializer(services.drone_resume(drone=self.get_object(), actor=self.principal)).data)

    @extend_schema(request=None, responses={200: DroneSerializer, **ERRORS}, summary="Drain a drone")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def drain(self, request, name: str):
        """`POST /api/v1/drones/<name>/drain`."""
        return Response(DroneSerializer(services.drone_drain(drone=self.get_object(), actor=self.principal)).data)


class PingViewSet(FleetViewSet):
    """`GET /ping`: ping status of every drone; `POST /ping/all` pushes a ping to each."""

    queryset = selectors.drone_list()
    serializer_class = PingStatusSerializer

    @extend_schema(responses={200: PingStatusSerializer(many=True), **ERRORS}, summary="Ping status of all drones")
    def list(self, request):
        """`GET /api/v1/ping`: ping status of every drone."""
        return self.list_page()

    @extend_schema(request=None, responses={202: PingAllSerializer, **ERRORS}, summary="Ping every drone")
    @action(detail=False, methods=["post"], url_path="all", url_name="all")
    @takes_no_body
    def ping_all(self, request):
        """`POST /api/v1/ping/all`: push a ping to every drone; results show in `GET /ping`."""
        return Response({"pinged": services.drone_ping_all()}, status=status.HTTP_202_ACCEPTED)


class EscalationViewSet(FleetViewSet):
    """`GET /escalation[?drone=<name>]`: the latest ladder steps, newest first."""

    queryset = EscalationEvent.objects.select_related("drone").order_by("-at", "-id")
    serializer_class = EscalationEventSerializer
    filterset_class = EscalationEventFilter

    @extend_schema(responses={200: EscalationEventSerializer(many=True), **ERRORS}, summary="Escalation events")
    def list(self, request):
        """`GET /api/v1/escalation[?drone=<name>]`: the latest ladder steps."""
        return self.list_page()
