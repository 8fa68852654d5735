"""Payload API: ViewSets on a router, operator verbs as `@action`s answering 202 with the rollout's URL.

Payloads are fleet-wide: any admin, engine or read token reads them; writes
need an admin token or an engine token bound to no tenant (FleetWrite).
Agent endpoints (report, pending) take the drone token.
"""
from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from bundles.api.uploads import InspectedUploadMixin
from bundles.upload import BUNDLE_FIELD, ReceivedBundle
from drones.api.base import DroneAgentAPIView
from drones.payloads import selectors, services
from drones.payloads.api.permissions import FleetWrite
from drones.payloads.api.serializers import (
    AcceptedSerializer,
    AgentReportSerializer,
    DriftReconcileSerializer,
    DronePayloadStateSerializer,
    PayloadEventSerializer,
    PayloadPushFormSerializer,
    PayloadTypeSerializer,
    PayloadVersionSerializer,
    PushedPayloadSerializer,
    ReleaseCreateSerializer,
    ReleaseSerializer,
    RolloutCreateSerializer,
    RolloutSerializer,
    RolloutTargetSerializer,
)
from drones.payloads.drift import drift_reconcile
from drones.payloads.engine import deploy_message
from drones.payloads.models import PayloadVersion, Release
from drones.payloads.protocol import agent_report_parse
from swarm.core.api import error_responses, takes_no_body
from swarm.core.errors import ApiError, NotFound
from swarm.core.pagination import page_response
from swarm.core.permissions import HasScope
from swarm.core.viewsets import NAME_PATTERN, SwarmViewSet


class FleetViewSet(SwarmViewSet):
    """Base of the payload ViewSets: the API's resource base (pages, id patterns, 404s), with the fleet's write rule."""

    permission_classes = [HasScope, FleetWrite]


class PayloadTypeViewSet(mixins.RetrieveModelMixin, mixins.UpdateModelMixin, FleetViewSet):
    """`/payload-types[/<name>]`: where a payload installs, its health check, restart and reconcile flags."""

    serializer_class = PayloadTypeSerializer
    lookup_field = "name"
    lookup_value_regex = NAME_PATTERN
    not_found_detail = "No payload type {name!r}."
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.payload_type_queryset()

    @extend_schema(responses={200: PayloadTypeSerializer(many=True), **error_responses(400, 404, 409)},
                   summary="List payload types")
    def list(self, request):
        return page_response(request, self.get_queryset(), PayloadTypeSerializer)

    @extend_schema(request=PayloadTypeSerializer,
                   responses={201: PayloadTypeSerializer, **error_responses(400, 404, 409)},
                   summary="Create a payload type")
    def create(self, request):
        serializer = PayloadTypeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if selectors.payload_type_queryset().filter(name=serializer.validated_data["name"]).exists():
            raise ApiError("A payload type with this name exists.", code="type_exists", field="name", status_code=409)
        return Response(PayloadTypeSerializer(serializer.save()).data, status=201)

    @extend_schema(responses={200: PayloadTypeSerializer, **error_responses(404)},
                   summary="Show a payload type")
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(responses={200: PayloadTypeSerializer, **error_responses(400, 404)},
                   summary="Change a payload type's install root, health check or flags")
    def partial_update(self, request, *args, **kwargs):
        return super().partial_update(request, *args, **kwargs)


class PayloadVersionViewSet(InspectedUploadMixin, mixins.RetrieveModelMixin, FleetViewSet):
    """`/payload-versions`: immutable versions; `POST` streams a bundle in (the bundle safety rules apply)."""

    serializer_class = PayloadVersionSerializer

    def get_queryset(self):
        return selectors.payload_version_queryset(type_name=self.request.query_params.get("type"))

    def initial(self, request, *args, **kwargs):
        if self.action == "create":
            # Installed before authentication, as on POST /bundles: the parser streams into the blob store.
            declared = request.query_params.get("sha256") or request.headers.get("X-Swarm-Bundle-Sha256")
            self.upload_handler = self.install_upload_handler(request, declared_sha256=declared)
        super().initial(request, *args, **kwargs)
        if self.action == "create":
            self.take_inspection_slot(request, self.upload_handler)

    def get_parsers(self):
        if getattr(self, "action", None) == "create" or self.request is None:
            return [MultiPartParser()]
        return super().get_parsers()

    @extend_schema(parameters=[OpenApiParameter("type", str, description="Only this payload type")],
                   responses={200: PayloadVersionSerializer(many=True), **error_responses(400, 404, 409)},
                   summary="List payload versions")
    def list(self, request):
        return page_response(request, self.get_queryset(), PayloadVersionSerializer)

    @extend_schema(responses={200: PayloadVersionSerializer, **error_responses(404)},
                   summary="Show a payload version")
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(request={"multipart/form-data": PayloadPushFormSerializer},
                   responses={201: PushedPayloadSerializer, 200: PushedPayloadSerializer,
                              **error_responses(400, 404, 409, 413)},
                   summary="Push a payload version (multipart: bundle, type, version, notes)",
                   description="201 with the new version; 200 with `deduplicated: true` when these bytes already "
                               "are a version of the type. 400: the bundle safety rules (absolute_path, "
                               "path_traversal, link_escapes_root, device_file, setuid_bit, too_many_members, …), "
                               "invalid_version, hash_mismatch; 409 version_exists; 413 too_large.")
    def create(self, request):
        try:
            received = request.FILES.get(BUNDLE_FIELD)
            if not isinstance(received, ReceivedBundle):
                raise ApiError("Attach the .tar.gz as the 'bundle' file field.", code="missing_field",
                               field=BUNDLE_FIELD)
            self.upload_handler.received = None  # ownership passes to the service
            pushed = services.payload_version_push(
                actor=self.principal, type_name=request.data.get("type", ""),
                version=request.data.get("version", ""), notes=request.data.get("notes", ""), received=received,
                declared_sha256=(request.data.get("sha256") or "").lower() or None)
        finally:
            self.upload_handler.discard()
        body = PayloadVersionSerializer(pushed.version).data
        body["deduplicated"] = pushed.deduplicated
        return Response(body, status=200 if pushed.deduplicated else 201)


class ReleaseViewSet(mixins.RetrieveModelMixin, FleetViewSet):
    """`/releases[/<name>[/manifest]]`: immutable manifests of payload versions."""

    serializer_class = ReleaseSerializer
    lookup_field = "name"
    lookup_value_regex = r"v[0-9.]+"

    def get_queryset(self):
        return selectors.release_queryset()

    @extend_schema(responses={200: ReleaseSerializer(many=True), **error_responses(400, 404, 409)},
                   summary="List releases")
    def list(self, request):
        return page_response(request, self.get_queryset(), ReleaseSerializer)

    @extend_schema(responses={200: ReleaseSerializer, **error_responses(404)},
                   summary="Show a release and its manifest")
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(request=ReleaseCreateSerializer,
                   responses={201: ReleaseSerializer, **error_responses(400, 404, 409)},
                   summary="Create a release (from the fleet's current versions and/or type=version pairs)")
    def create(self, request):
        serializer = ReleaseCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        release = services.release_create(actor=self.principal, name=data.get("name") or None,
                                          from_current=data["from_current"], payloads=data["payloads"],
                                          notes=data["notes"])
        return Response(ReleaseSerializer(release).data, status=201)

    @extend_schema(responses={(200, "application/json"): OpenApiTypes.BINARY, **error_responses(400, 404, 409)},
                   summary="Download the release manifest as canonical JSON (its sha256 in X-Swarm-Manifest-Sha256)")
    @action(detail=True, methods=["get"])
    def manifest(self, request, name=None):
        release = self.get_object()
        response = HttpResponse(services.canonical_json(release.manifest), content_type="application/json")
        response["X-Swarm-Manifest-Sha256"] = release.manifest_sha256
        response["Content-Disposition"] = f'attachment; filename="{release.name}.json"'
        return response


def _accepted(rollout) -> Response:
    url = RolloutSerializer().get_url(rollout)
    return Response({"id": rollout.pk, "url": url, "state": rollout.state}, status=status.HTTP_202_ACCEPTED,
                    headers={"Location": url})


def _parse_budget(raw: str) -> tuple[int, bool]:
    text = str(raw).strip()
    percent = text.endswith("%")
    number = text[:-1] if percent else text
    if not number.isdigit():
        raise ApiError("failure_budget is a count (3) or a percentage (10%).", code="invalid", field="failure_budget")
    return int(number), percent


class RolloutViewSet(mixins.RetrieveModelMixin, FleetViewSet):
    """`/rollouts`: start one (202), follow it, and the verbs pause, resume, promote, abort, revert (202)."""

    serializer_class = RolloutSerializer
    write_actions = ()

    def get_queryset(self):
        active = self.request.query_params.get("active")
        return selectors.rollout_queryset(active=True if active in ("1", "true") else None)

    @extend_schema(parameters=[OpenApiParameter("active", bool, description="Only unfinished rollouts")],
                   responses={200: RolloutSerializer(many=True), **error_responses(400, 404, 409)},
                   summary="List rollouts")
    def list(self, request):
        return page_response(request, self.get_queryset(), RolloutSerializer)

    @extend_schema(responses={200: RolloutSerializer, **error_responses(404)},
                   summary="Show a rollout with its progress")
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(request=RolloutCreateSerializer,
                   responses={202: AcceptedSerializer, **error_responses(400, 404, 409)},
                   summary="Start a rollout of a payload version or a release",
                   description="202 with the rollout's URL; the engine advances it. 409 rollout_conflict names "
                               "an active rollout that already targets one of the drones and payload types.")
    def create(self, request):
        serializer = RolloutCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version, release = None, None
        if data.get("release"):
            release = Release.objects.filter(name=data["release"]).first()
            if release is None:
                raise NotFound(f"There is no release {data['release']}.", field="release")
        elif data.get("payload_version_id"):
            version = PayloadVersion.objects.filter(pk=data["payload_version_id"]).first()
            if version is None:
                raise NotFound(f"There is no payload version {data['payload_version_id']}.", field="payload_version_id")
        elif data.get("payload_type") and data.get("version"):
            version = PayloadVersion.objects.filter(payload_type__name=data["payload_type"],
                                                    version=data["version"]).first()
            if version is None:
                raise NotFound(f"There is no payload version {data['payload_type']}={data['version']}.",
                               field="version")
        else:
            raise ApiError("Name a release, a payload_version_id, or a payload_type and version.",
                           code="missing_field", field="payload_type")
        budget, percent = _parse_budget(data["failure_budget"])
        strategy = services.RolloutStrategy(
            max_parallel=data["max_parallel"], canary=data["canary"], min_healthy_time=data["min_healthy_time"],
            healthy_deadline=data["healthy_deadline"], progress_deadline=data["progress_deadline"],
            auto_revert=data["auto_revert"], auto_promote=data["auto_promote"], failure_budget=budget,
            failure_budget_is_percent=percent)
        target = data["target"]
        rollout = services.rollout_start(actor=self.principal, strategy=strategy, payload_version=version,
                                         release=release, target_all=target["all"], labels=target["labels"],
                                         names=target["names"])
        return _accepted(rollout)

    @extend_schema(responses={200: RolloutTargetSerializer(many=True), **error_responses(400, 404, 409)},
                   summary="Per-drone states of a rollout")
    @action(detail=True, methods=["get"])
    def targets(self, request, pk=None):
        return page_response(request, selectors.rollout_targets(self.get_object()), RolloutTargetSerializer)

    @extend_schema(responses={200: PayloadEventSerializer(many=True), **error_responses(400, 404, 409)},
                   summary="The rollout's event log")
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        return page_response(request, selectors.rollout_events(self.get_object()), PayloadEventSerializer)

    def _verb(self, function):
        rollout = self.get_object()
        return _accepted(function(rollout_id=rollout.pk, actor=self.principal))

    @extend_schema(request=None,
                   responses={202: AcceptedSerializer, **error_responses(400, 404, 409)},
                   summary="Pause a rollout (409 unless running)")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def pause(self, request, pk=None):
        return self._verb(services.rollout_pause)

    @extend_schema(request=None,
                   responses={202: AcceptedSerializer, **error_responses(400, 404, 409)},
                   summary="Resume a paused rollout")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def resume(self, request, pk=None):
        return self._verb(services.rollout_resume)

    @extend_schema(request=None,
                   responses={202: AcceptedSerializer, **error_responses(400, 404, 409)},
                   summary="Promote a rollout past its canaries (409 unless awaiting_promotion)")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def promote(self, request, pk=None):
        return self._verb(services.rollout_promote)

    @extend_schema(request=None,
                   responses={202: AcceptedSerializer, **error_responses(400, 404, 409)},
                   summary="Abort a rollout")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def abort(self, request, pk=None):
        return self._verb(services.rollout_abort)

    @extend_schema(request=None,
                   responses={202: AcceptedSerializer, **error_responses(400, 404, 409)},
                   summary="Revert every drone the rollout changed to its previous version")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def revert(self, request, pk=None):
        return self._verb(services.rollout_revert)


class PayloadDriftViewSet(FleetViewSet):
    """`/payload-drift`: drones whose reported hash differs from the desired one; `reconcile` fixes them."""

    serializer_class = DronePayloadStateSerializer

    def get_queryset(self):
        return selectors.drift_states(drifted_only=self.request.query_params.get("all") not in ("1", "true"))

    @extend_schema(parameters=[OpenApiParameter("all", bool, description="Every drone and type, not only drifted")],
                   responses={200: DronePayloadStateSerializer(many=True), **error_responses(400, 404, 409)},
                   summary="Fleet-wide drift")
    def list(self, request):
        return page_response(request, self.get_queryset(), DronePayloadStateSerializer)

    @extend_schema(request=DriftReconcileSerializer,
                   responses={202: OpenApiResponse(description="rollout ids"),
                              **error_responses(400, 404, 409)},
                   summary="Start reconcile rollouts for drifted drones")
    @action(detail=False, methods=["post"])
    def reconcile(self, request):
        serializer = DriftReconcileSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        drone_id = type_id = None
        if serializer.validated_data.get("drone"):
            from drones.models import Drone

            drone_id = get_object_or_404(Drone, name=serializer.validated_data["drone"]).pk
        if serializer.validated_data.get("type"):
            type_id = get_object_or_404(selectors.payload_type_queryset(), name=serializer.validated_data["type"]).pk
        rollout_ids = drift_reconcile(actor=str(self.principal), drone_id=drone_id, payload_type_id=type_id)
        return Response({"rollout_ids": rollout_ids,
                         "rollouts": [reverse("rollout-detail", kwargs={"pk": pk}) for pk in rollout_ids]},
                        status=202)


class PayloadAgentReportView(DroneAgentAPIView):
    """`POST /payloads/agent/report`: an agent reports the states of one deploy (or revert), in order."""

    @extend_schema(request=AgentReportSerializer,
                   responses={204: None, **error_responses(400, 404, 409)},
                   summary="Agent: report a deploy's states")
    def post(self, request):
        report = agent_report_parse(request.data)
        services.payload_target_report(drone_id=self.drone_id, target_id=report.target_id, action=report.action,
                                       states=report.states, current_sha256=report.current_sha256)
        return Response(status=204)


class PayloadAgentPendingView(DroneAgentAPIView):
    """`GET /payloads/agent/pending`: the deploy commands meant for this drone (the poll while the socket is down)."""

    @extend_schema(responses={200: OpenApiResponse(description="{commands: [deploy_payload, …]}"),
                              **error_responses(400, 404, 409)},
                   summary="Agent: deploy commands waiting for this drone")
    def get(self, request):
        commands = [deploy_message(target, action="revert" if target.revert_state else "deploy")
                    for target in services.payload_pending_targets(drone_id=self.drone_id)]
        return Response({"commands": commands})
