"""What every bundle-upload view shares: the streaming upload handler and the caller's inspection slot."""
from __future__ import annotations

from django.conf import settings
from django.http import UnreadablePostError

from bundles.blobstore import BlobStore
from bundles.inspection import InspectionSlot, inspection_holder, inspection_slot_acquire
from bundles.services import bundle_limits
from bundles.upload import BUNDLE_FIELD, BundleUploadHandler
from swarm.core.errors import ApiError, PayloadTooLarge
from swarm.core.inputs import parse_int


class InspectedUploadMixin:
    """For API views that stream a bundle in.

    `install_upload_handler()` (before authentication: a session's CSRF check
    reads the form) puts the streaming handler in place; `take_inspection_slot()`
    (once authenticated, before the body is read) counts the upload against
    its tenant's limit, and the slot is given back when the request ends,
    whatever happened. A body that ends early because the client went away is
    a 400 `client_disconnected` (nobody reads it; it is not logged as a 500).
    """

    inspection_slot: InspectionSlot | None = None

    def install_upload_handler(self, request, *, declared_sha256: str | None,
                               form_overhead: int = 64 * 1024) -> BundleUploadHandler:
        content_length = parse_int(request.META.get("CONTENT_LENGTH") or "0", field="Content-Length")
        if content_length > settings.SWARM_BUNDLE_MAX_BYTES + form_overhead:
            raise PayloadTooLarge(
                f"The request is larger than the upload limit of {settings.SWARM_BUNDLE_MAX_BYTES} bytes.",
                field=BUNDLE_FIELD,
            )
        handler = BundleUploadHandler(
            request._request, store=BlobStore(), limits=bundle_limits(),
            max_bytes=settings.SWARM_BUNDLE_MAX_BYTES, declared_sha256=(declared_sha256 or "").lower() or None,
        )
        request._request.upload_handlers = [handler]
        return handler

    def take_inspection_slot(self, request, handler: BundleUploadHandler) -> None:
        self.inspection_slot = inspection_slot_acquire(
            holder=inspection_holder(principal=self.principal, tenant_slug=request.query_params.get("tenant")))
        handler.keep_alive = self.inspection_slot.keep_alive

    def handle_exception(self, exc):
        if isinstance(exc, UnreadablePostError):
            exc = ApiError("The client went away before sending the whole body; nothing was kept.",
                           code="client_disconnected", field=BUNDLE_FIELD)
        return super().handle_exception(exc)

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            if self.inspection_slot is not None:
                self.inspection_slot.release()
                self.inspection_slot = None
