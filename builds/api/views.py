"""Builds API views: the drone agent protocol, build logs and artifacts, and forge webhooks.

Jobs, builds, their verbs and queues are viewsets (builds/api/viewsets.py).
`/builds/<id>/log` and `/builds/<id>/artifacts` stay here because each URL
serves a user's read (scoped by `selectors.build_get`) and an agent's write.

Agent-facing responses about a build carry `Job-Status: <state>` (GitLab
Runner's header), so an agent learns of a cancel from any call it makes.
"""
from __future__ import annotations


from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from builds import metrics, selectors, services
from builds.api.serializers import (
    ArtifactAnnounceSerializer,
    ArtifactSerializer,
    ClaimedBuildSerializer,
    ClaimRequestSerializer,
    StateAnswerSerializer,
    StateUpdateSerializer,
)
from builds.choices import ArtifactState, BuildState, DeliveryStatus
from builds.claiming import claim_payload
from builds.models import Artifact, Build
from builds.protocol import claim_request_parse, log_patch_parse, state_update_parse
from builds.services import webhooks
from swarm.core.api import ScopedAPIView, error_responses
from swarm.core.choices import TokenScope
from swarm.core.errors import ApiError, NotFound, error_body
from swarm.core.inputs import query_int
from swarm.core.pagination import page_response
from swarm.core.secret_box import SecretUndecryptable
from swarm.core.principals import READ_SCOPES

DRONE_SCOPES = frozenset({TokenScope.DRONE})
#: One log read returns at most this much; `X-Log-Offset` says where the next read starts.
MAX_LOG_READ_BYTES = 4 * 1024 * 1024


# --- agent helpers -----------------------------------------------------------


class AgentMixin:
    """Resolves the calling drone for agent methods and renews its build leases."""

    def agent_drone(self):
        """The calling drone as a reference (its id; services lock or load the row when they need it)."""
        from drones.selectors import drone_id_for_principal

        principal = self.principal
        if principal is None or principal.scope != TokenScope.DRONE:
            raise ApiError("This call needs a drone token.", code="permission_denied", status_code=403)
        drone = services.DroneRef(pk=drone_id_for_principal(principal))
        services.builds_renew_leases(drone=drone)
        return drone

    @staticmethod
    def with_job_status(response: Response, build_id: int) -> Response:
        state = Build.objects.filter(pk=build_id).values_list("state", flat=True).first()
        if state:
            response["Job-Status"] = state
        return response


# --- the agent protocol ------------------------------------------------------


class BuildRequestView(AgentMixin, ScopedAPIView):
    """`POST /builds/request`: a drone asks for work → 201 with one build, or 204."""

    read_scopes = DRONE_SCOPES
    write_scopes = DRONE_SCOPES

    @extend_schema(request=ClaimRequestSerializer,
                   responses={201: ClaimedBuildSerializer, 204: OpenApiResponse(description="No build for this drone"),
                              **error_responses()},
                   summary="Claim a build (drone token)", tags=["agent"])
    def post(self, request):
        wanted = claim_request_parse(request.data)
        drone = self.agent_drone()
        with metrics.CLAIM_SECONDS.time():
            result = services.build_claim(drone=drone, free_slots=wanted.free_slots, labels=wanted.labels)
        if result is None:
            response = Response(status=status.HTTP_204_NO_CONTENT)
        else:
            try:
                response = Response(claim_payload(result), status=status.HTTP_201_CREATED)
                response["Job-Status"] = result.state
            except SecretUndecryptable as undecryptable:
                refused = services.build_fail_undecryptable_claim(claimed=result.claimed, error=undecryptable)
                response = Response(error_body(refused.code, refused.detail), status=refused.status_code)
        canceling = selectors.drone_canceling_build_ids(drone.pk)
        if canceling:
            response["Swarm-Canceling-Builds"] = ",".join(str(pk) for pk in canceling)
        return response


class BuildStateView(AgentMixin, ScopedAPIView):
    """`PUT /builds/<id>/state`: acknowledge (running), keep alive, or report the final state."""

    read_scopes = DRONE_SCOPES
    write_scopes = DRONE_SCOPES

    @extend_schema(request=StateUpdateSerializer,
                   responses={200: StateAnswerSerializer, **error_responses(404, 409, 416)},
                   summary="Update a build's state (drone token)", tags=["agent"])
    def put(self, request, build_id: int):
        update = state_update_parse(request.data)
        drone = self.agent_drone()
        try:
            if update.state == BuildState.RUNNING:
                build = services.build_set_running(build_id=build_id, drone=drone,
                                                   attempt_number=update.attempt_number, commit_sha=update.commit_sha,
                                                   branch=update.branch)
            else:
                build = services.build_finish_from_agent(
                    build_id=build_id, drone=drone, state=update.state, exit_code=update.exit_code,
                    failure_reason=update.failure_reason, log_bytesize=update.log_bytesize,
                    log_checksum=update.log_checksum, attempt_number=update.attempt_number,
                )
        except ApiError as error:
            error.headers.setdefault("Job-Status", Build.objects.filter(pk=build_id).values_list(
                "state", flat=True).first() or "")
            raise
        build.refresh_from_db(fields=["state", "failure_reason", "attempt_count"])
        response = Response({"id": build.pk, "state": build.state, "failure_reason": build.failure_reason,
                             "attempt": build.attempt_count})
        response["Job-Status"] = build.state
        return response


class BuildLogView(AgentMixin, ScopedAPIView):
    """`GET /builds/<id>/log?offset=` reads the log as text; `PATCH` appends (drone token)."""

    read_scopes = READ_SCOPES
    write_scopes = DRONE_SCOPES

    @extend_schema(parameters=[OpenApiParameter("offset", int, description="First byte to return (default 0)"),
                               OpenApiParameter("attempt", int, description="Attempt number (default: latest)")],
                   responses={(200, "text/plain"): OpenApiTypes.STR, **error_responses(404)},
                   summary="Read a build's log from a byte offset (at most 4 MiB a call)")
    def get(self, request, build_id: int):
        build = selectors.build_get(self.principal, build_id)
        attempt = selectors.build_attempt_get(build, request.query_params.get("attempt"))
        offset = query_int(request, "offset", default=0)
        size = attempt.log_size if attempt else 0
        body = bytearray()
        if attempt and offset < size:
            for piece in services.attempt_log_iter(attempt=attempt, offset=offset):
                body += piece
                if len(body) >= MAX_LOG_READ_BYTES:
                    break  # the client asks again from X-Log-Offset
        body = bytes(body[:MAX_LOG_READ_BYTES])
        response = StreamingHttpResponse([body], content_type="text/plain; charset=utf-8")
        response["X-Log-Size"] = str(size)
        response["X-Log-Offset"] = str(offset + len(body))
        response["X-Build-State"] = build.state
        response["X-Build-Attempt"] = str(attempt.number if attempt else 0)
        response["X-Build-Latest-Attempt"] = str(build.attempt_count)
        response["X-Build-Finished"] = "true" if build.is_finished else "false"
        return response

    @extend_schema(request={"text/plain": OpenApiTypes.BINARY},
                   parameters=[OpenApiParameter("Content-Range", str, OpenApiParameter.HEADER, required=True,
                                                description="`<start>-<end>` (inclusive) of this piece")],
                   responses={202: OpenApiResponse(description="Appended; `Range: 0-<size>`"),
                              416: OpenApiResponse(description="Wrong start; `Range: 0-<size>` says where to resume"),
                              **error_responses(400, 404, 413)},
                   summary="Append to a build's log (drone token)", tags=["agent"])
    def patch(self, request, build_id: int):
        drone = self.agent_drone()
        patch = log_patch_parse(content_range=request.headers.get("Content-Range"), data=request._request.body,
                                build_attempt=request.headers.get("Build-Attempt"))
        try:
            size = services.build_log_append(build_id=build_id, drone=drone, start=patch.start, data=patch.data,
                                             attempt_number=patch.attempt_number)
        except ApiError as error:
            state = Build.objects.filter(pk=build_id).values_list("state", flat=True).first()
            if state:
                error.headers.setdefault("Job-Status", state)
            raise
        response = Response(status=status.HTTP_202_ACCEPTED)
        response["Range"] = f"0-{size}"
        return self.with_job_status(response, build_id)


class BuildArtifactsView(AgentMixin, ScopedAPIView):
    """`GET /builds/<id>/artifacts` lists stored artifacts; `POST` announces one (drone token)."""

    read_scopes = READ_SCOPES
    write_scopes = DRONE_SCOPES

    @extend_schema(responses={200: ArtifactSerializer(many=True), **error_responses(400, 404)},
                   summary="List a build's artifacts")
    def get(self, request, build_id: int):
        build = selectors.build_get(self.principal, build_id)
        return page_response(request, selectors.build_artifacts(build), ArtifactSerializer)

    @extend_schema(request=ArtifactAnnounceSerializer, responses={201: OpenApiTypes.OBJECT, **error_responses(400)},
                   summary="Announce an artifact and get where to upload it (drone token)", tags=["agent"])
    def post(self, request, build_id: int):
        body = ArtifactAnnounceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        drone = self.agent_drone()
        artifact = services.artifact_announce(build_id=build_id, drone=drone, attempt_number=body.validated_data.get(
            "attempt"), path=body.validated_data["path"], size=body.validated_data["size"],
            sha256=body.validated_data["sha256"])
        from bundles.blobstore import BlobStore

        store = BlobStore()
        content_path = f"/api/v1/builds/{build_id}/artifacts/{artifact.pk}/content"
        if store.is_s3:
            url = store.s3_client().generate_presigned_url(
                "put_object", Params={"Bucket": store.storage.bucket_name, "Key": artifact.storage_key},
                ExpiresIn=settings.SWARM_DOWNLOAD_URL_TTL)
            upload = {"method": "PUT", "url": url, "direct": True,
                      "commit_url": f"/api/v1/builds/{build_id}/artifacts/{artifact.pk}/commit"}
        else:
            upload = {"method": "PUT", "url": content_path, "direct": False}
        response = Response({"id": artifact.pk, "path": artifact.path, "upload": upload}, status=201)
        return self.with_job_status(response, build_id)


class ArtifactContentView(AgentMixin, ScopedAPIView):
    """`PUT /builds/<id>/artifacts/<aid>/content`: stream the bytes through the API (drone token)."""

    read_scopes = DRONE_SCOPES
    write_scopes = DRONE_SCOPES

    @extend_schema(request={"application/octet-stream": OpenApiTypes.BINARY},
                   responses={200: ArtifactSerializer, **error_responses(400)},
                   summary="Upload an artifact's bytes through the API (drone token)", tags=["agent"])
    def put(self, request, build_id: int, artifact_id: int):
        drone = self.agent_drone()
        artifact = _agent_artifact(drone, build_id, artifact_id)
        artifact = services.artifact_store_stream(artifact=artifact, stream=request._request)
        return self.with_job_status(Response(ArtifactSerializer(artifact).data), build_id)


class ArtifactCommitView(AgentMixin, ScopedAPIView):
    """`POST /builds/<id>/artifacts/<aid>/commit`: after a presigned PUT, verify size and sha256."""

    read_scopes = DRONE_SCOPES
    write_scopes = DRONE_SCOPES

    @extend_schema(request=None, responses={200: ArtifactSerializer, **error_responses(400)},
                   summary="Verify an artifact uploaded straight to S3 (drone token)", tags=["agent"])
    def post(self, request, build_id: int, artifact_id: int):
        drone = self.agent_drone()
        artifact = _agent_artifact(drone, build_id, artifact_id)
        artifact = services.artifact_verify_stored(artifact=artifact)
        return self.with_job_status(Response(ArtifactSerializer(artifact).data), build_id)


def _agent_artifact(drone, build_id: int, artifact_id: int) -> Artifact:
    artifact = Artifact.objects.filter(pk=artifact_id, build_id=build_id, attempt__drone_id=drone.pk).first()
    if artifact is None:
        raise NotFound("No such artifact of a build assigned to this drone.")
    if artifact.state == ArtifactState.STORED:
        raise ApiError("This artifact is already stored.", code="conflict", status_code=409)
    return artifact


# --- webhooks ----------------------------------------------------------------


class WebhookView(ScopedAPIView):
    """`POST /webhooks/<provider>`: verify the signature on the raw body, record once, answer what becomes of it.

    202 `received`: a push a task turns into builds. 200: a replay (`duplicate`),
    or a delivery ignored at once (`ignored`, with the reason in `detail`: a
    ping's `pong`, a non-push event, a deletion, no job, a disabled job).
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request={"application/json": OpenApiTypes.OBJECT,
                            "application/x-www-form-urlencoded": OpenApiTypes.OBJECT},
                   responses={202: inline_serializer("WebhookAccepted", {
                       "delivery": drf_serializers.CharField(), "duplicate": drf_serializers.BooleanField(),
                       "status": drf_serializers.CharField(), "detail": drf_serializers.CharField()}),
                       200: OpenApiResponse(description="A replayed delivery, or one ignored at once (the detail "
                                                        "says why; a ping answers `pong`)"),
                       **error_responses(400, 401, 404, 415)},
                   summary="Receive a forge webhook", tags=["webhooks"])
    def post(self, request, provider: str):
        raw_body = request._request.body
        delivery, created = webhooks.webhook_receive(provider=provider, headers=request.headers, raw_body=raw_body)
        queued = created and delivery.status == DeliveryStatus.RECEIVED
        return Response({"delivery": delivery.delivery_id, "duplicate": not created, "status": delivery.status,
                         "detail": delivery.detail}, status=202 if queued else 200)
