"""Bundle API: existence checks, metadata with a download URL, signed downloads."""
import os
import re

from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response

from bundles.api.serializers import BundleSerializer
from bundles.blobstore import BlobStore
from bundles.downloads import download_signature_valid
from bundles.keys import blob_key, is_sha256_hex
from bundles.models import Bundle
from bundles.selectors import bundle_get, bundle_queryset
from swarm.core.api import ScopedAPIView, error_responses
from swarm.core.errors import error_body

RANGE_HEADER = re.compile(r"^bytes=(\d*)-(\d*)$")


class BundleDetailView(ScopedAPIView):
    """`HEAD` answers whether a bundle is stored; `GET` describes it with a download URL."""

    @extend_schema(responses={200: BundleSerializer, **error_responses(404)}, summary="Describe a stored bundle",
                   description="`HEAD` on the same path answers 200 (with `X-Bundle-Size`) or 404 without a body. "
                               "A tenant-bound token sees only bundles its tenant's versions use.")
    def get(self, request, sha256: str):
        return Response(BundleSerializer(bundle_get(self.principal, sha256)).data)

    @extend_schema(responses={200: OpenApiResponse(description="Stored"), 404: OpenApiResponse(description="Not stored")},
                   summary="Is this bundle stored?")
    def head(self, request, sha256: str):
        bundle = bundle_queryset(self.principal).filter(sha256=sha256.lower()).only("size").first()
        if bundle is None:
            response = Response(status=404)
            # "Not stored" is this call's ordinary answer (every push asks it first), not a
            # request gone wrong: keep it out of django.request's "Not Found" warnings.
            response._has_been_logged = True
            return response
        response = Response(status=200)
        response["Content-Length"] = "0"
        response["X-Bundle-Size"] = str(bundle.size)
        return response


def _iter_file_range(handle, start: int, length: int, chunk_size: int = 1024 * 1024):
    handle.seek(start)
    remaining = length
    try:
        while remaining > 0:
            chunk = handle.read(min(chunk_size, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


@require_GET
def bundle_download(request, sha256: str):
    """Serve a blob from local storage to whoever holds a valid signed URL (Range supported)."""
    if not is_sha256_hex(sha256) or not download_signature_valid(
        sha256, request.GET.get("expires"), request.GET.get("signature")
    ):
        return JsonResponse(error_body("invalid_signature", "The download link is invalid or expired."), status=403)
    if not Bundle.objects.filter(sha256=sha256).exists():
        return JsonResponse(error_body("not_found", f"No bundle with sha256 {sha256}."), status=404)
    store = BlobStore()
    if store.is_s3:  # a link minted before storage moved to S3: hand over to S3 directly
        response = HttpResponse(status=302)
        response["Location"] = store.presigned_url(blob_key(sha256), expires_in=300)
        return response
    path = store.local_path(blob_key(sha256))
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return JsonResponse(error_body("blob_missing", "The bundle's blob is missing from storage."), status=410)
    range_match = RANGE_HEADER.match(request.headers.get("Range", ""))
    if range_match and (range_match.group(1) or range_match.group(2)):
        first, last = range_match.groups()
        if first:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        else:
            start, end = max(size - int(last), 0), size - 1
        if start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        length = end - start + 1
        response = StreamingHttpResponse(_iter_file_range(open(path, "rb"), start, length), status=206,
                                         content_type="application/gzip")
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(length)
    else:
        response = FileResponse(open(path, "rb"), content_type="application/gzip")
        response["Content-Length"] = str(size)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = f'"{sha256}"'
    response["Content-Disposition"] = f'attachment; filename="{sha256}.tar.gz"'
    return response
