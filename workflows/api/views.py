"""Workflow registry API: bundle upload and registration (workflows, versions, activation: api/viewsets.py)."""
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from bundles.api.uploads import InspectedUploadMixin
from bundles.api.views import BundleDetailView
from bundles.keys import is_sha256_hex
from bundles.upload import BUNDLE_FIELD, ReceivedBundle
from swarm.core.api import ScopedAPIView, error_responses
from swarm.core.errors import ApiError, PayloadTooLarge
from workflows import services
from workflows.api.serializers import (
    BundleUploadFormSerializer,
    BundleVersionFieldsSerializer,
    RegisteredVersionSerializer,
)

class BundleUploadView(InspectedUploadMixin, ScopedAPIView):
    """`POST /api/v1/bundles`: stream a bundle in and register it as a workflow version.

    The digest may be declared up front (`?sha256=` or `X-Swarm-Bundle-Sha256`)
    so the server streams straight to its final S3 key; the `sha256` form
    field is checked too.
    """

    parser_classes = [MultiPartParser]

    def initial(self, request, *args, **kwargs):
        # Installed before authentication: a session's CSRF check reads the form.
        declared = request.query_params.get("sha256") or request.headers.get("X-Swarm-Bundle-Sha256")
        self.upload_handler = self.install_upload_handler(request, declared_sha256=declared)
        super().initial(request, *args, **kwargs)
        self.take_inspection_slot(request, self.upload_handler)

    @extend_schema(
        request={"multipart/form-data": BundleUploadFormSerializer},
        parameters=[OpenApiParameter("sha256", str, description="Declared digest (enables direct streaming to S3).")],
        responses={201: RegisteredVersionSerializer, 200: RegisteredVersionSerializer,
                   **error_responses(400, 404, 409, 413, 429, 503)},
        summary="Upload a bundle and register it as a workflow version",
        description="201 with the new version; 200 with `deduplicated: true` when these bytes already are "
                    "this version (a retried push). 400 codes: missing_field, invalid_version, invalid_metadata, "
                    "hash_mismatch and the bundle safety rules (not_a_tar_gz, absolute_path, path_traversal, "
                    "link_escapes_root, device_file, fifo, special_file, setuid_bit, too_many_members, "
                    "too_large_unpacked, decompression_bomb, empty_bundle); 404 a tenant that does not exist "
                    "(unless `create_tenant`) or another tenant's; 409 version_exists (the label holds other "
                    "bytes) or same_bytes (these bytes already are another version); 413 too_large; 429 "
                    "too_many_inspections (the tenant's uploads in flight).",
    )
    def post(self, request):
        try:
            data, files = request.data, request.FILES
            received = files.get(BUNDLE_FIELD)
            if not isinstance(received, ReceivedBundle):
                raise ApiError("Attach the .tar.gz as the 'bundle' file field.", code="missing_field",
                               field=BUNDLE_FIELD)
            self.upload_handler.received = None  # ownership passes to the service
            declared = data.get("sha256") or request.query_params.get("sha256") or request.headers.get(
                "X-Swarm-Bundle-Sha256")
            result = _register_received(self.principal, data, received=received, declared_sha256=declared)
        finally:
            self.upload_handler.discard()
        return _registered_response(result)


def _register_received(principal, fields, *, received: ReceivedBundle, declared_sha256: str | None):
    """Register a received bundle with the version fields of a form or query string (both upload paths).

    The fields go through `BundleVersionFieldsSerializer` first: an unknown
    one, a tenant that is no slug or text no column stores is a 400 before
    anything is registered.
    """
    # An empty form value is an absent one, as multipart clients send them.
    form = BundleVersionFieldsSerializer(data={key: fields.get(key) for key in fields
                                               if key != BUNDLE_FIELD and fields.get(key) != ""})
    form.is_valid(raise_exception=True)
    checked = form.validated_data
    return services.workflow_version_register(
        principal=principal,
        tenant_slug=checked["tenant"],
        workflow_slug=checked["workflow"],
        version=checked["version"],
        metadata=checked.get("metadata"),
        declared_sha256=(declared_sha256 or "").lower() or None,
        received=received,
        activate=checked["activate"],
        workflow_defaults={key: checked[key] for key in ("runtime", "entrypoint") if checked.get(key)},
        create_tenant=checked["create_tenant"],
    )


def _registered_response(result) -> Response:
    body = RegisteredVersionSerializer(result.version).data
    body["deduplicated"] = result.deduplicated
    return Response(body, status=status.HTTP_200_OK if result.deduplicated else status.HTTP_201_CREATED)


class BundleView(InspectedUploadMixin, BundleDetailView):
    """`/api/v1/bundles/<sha256>`: `HEAD`/`GET` describe a stored bundle; `PUT` uploads one.

    `PUT` takes the tarball itself as the body (no multipart framing) with the
    version fields in the query string, and registers it exactly like the
    multipart `POST /api/v1/bundles`. The digest in the path is the declared
    one, so the server streams straight to the blob's final S3 key and refuses
    bytes that do not match it.
    """

    @extend_schema(
        request={"application/gzip": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter("tenant", str, required=True, description="Tenant slug."),
            OpenApiParameter("workflow", str, required=True, description="Workflow slug (created on first push)."),
            OpenApiParameter("version", str, required=True, description="Semantic version, e.g. 1.2.0."),
            OpenApiParameter("metadata", str, description="JSON object stored with the version."),
            OpenApiParameter("activate", bool, description="Make the new version active."),
            OpenApiParameter("runtime", str, description="Runtime of a workflow created by this push."),
            OpenApiParameter("entrypoint", str, description="Entrypoint of a workflow created by this push."),
            OpenApiParameter("create_tenant", bool, description="Create the tenant if it does not exist "
                                                                "(unbound tokens); else a missing tenant is a 404."),
        ],
        responses={201: RegisteredVersionSerializer, 200: RegisteredVersionSerializer,
                   **error_responses(400, 404, 409, 411, 413, 429, 503)},
        summary="Upload a bundle as the raw request body and register it as a workflow version",
    )
    def put(self, request, sha256: str):
        declared = sha256.lower()
        if not is_sha256_hex(declared):
            raise ApiError("The path must end in the bundle's sha256 as 64 hex digits.", code="invalid_sha256",
                           field="sha256")
        raw_length = request.META.get("CONTENT_LENGTH")
        if not raw_length or not (raw_length.isascii() and raw_length.isdigit()):
            raise ApiError("Send the bundle with a Content-Length header.", code="length_required",
                           status_code=status.HTTP_411_LENGTH_REQUIRED)
        content_length = int(raw_length)
        if content_length > settings.SWARM_BUNDLE_MAX_BYTES:
            raise PayloadTooLarge(
                f"The bundle is larger than the upload limit of {settings.SWARM_BUNDLE_MAX_BYTES} bytes.",
                field=BUNDLE_FIELD,
            )
        handler = self.install_upload_handler(request, declared_sha256=declared, form_overhead=0)
        self.take_inspection_slot(request, handler)
        try:
            received = handler.receive_stream(request._request, content_length=content_length)
            handler.received = None  # ownership passes to the service
            result = _register_received(self.principal, request.query_params, received=received,
                                        declared_sha256=declared)
        finally:
            handler.discard()
        return _registered_response(result)
