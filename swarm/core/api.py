"""API base classes: the caller's principal and tenant scoping in one place; writes that take no body."""
import functools
from collections.abc import Mapping

from rest_framework import exceptions, serializers
from rest_framework.views import APIView

from swarm.core.errors import ApiError
from swarm.core.pagination import ListPage
from swarm.core.permissions import request_principal
from swarm.core.principals import Principal
from swarm.core.serializers import refuse_unknown_fields


class ScopedAPIView(APIView):
    """Base view: `self.principal` is the authenticated caller (token or admin user).

    Lists are answered a page at a time (swarm.core.pagination.page_response).
    """

    pagination_class = ListPage

    @property
    def principal(self) -> Principal:
        return request_principal(self.request)


class ErrorSerializer(serializers.Serializer):
    """The shape of every API error (for the OpenAPI schema)."""

    error = serializers.CharField(help_text="Machine-readable code, e.g. not_found, hash_mismatch, version_exists.")
    detail = serializers.CharField(help_text="A human sentence saying what is wrong.")
    field = serializers.CharField(required=False, help_text="The request field at fault, when there is one.")
    quota = serializers.CharField(required=False, help_text="On a 429 quota_exceeded: the quota's name.")
    limit = serializers.IntegerField(required=False, help_text="On a 429 quota_exceeded: the quota's value.")
    usage = serializers.IntegerField(required=False, help_text="On a 429 quota_exceeded: the tenant's usage now.")


AUTH_ERROR_STATUSES = (401, 403)


def error_responses(*statuses: int) -> dict:
    """OpenAPI responses for error statuses, all with the one error shape; 401 and 403 are always included."""
    return {status: ErrorSerializer for status in sorted(set(statuses) | set(AUTH_ERROR_STATUSES))}


class _NoFields(serializers.Serializer):
    """What a write that takes no body accepts: nothing."""


def refuse_body(request) -> None:
    """Refuse a body on a write that takes none, before anything changes.

    No body, or an empty JSON object or form, is fine (clients send `{}`).
    A body of a type no parser of the view reads is a 415, as on the
    endpoints that parse their body; a body without a Content-Type too (it
    cannot be read as anything). A JSON object or form with fields is a 400
    `unknown_field` naming the first; any other JSON value a 400.
    """
    raw_length = request.META.get("CONTENT_LENGTH") or "0"
    chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    if raw_length in ("", "0") and not chunked:
        return
    if not request.content_type:
        if not request.body:
            return
        raise exceptions.UnsupportedMediaType("", detail="This call takes no body; a body needs a Content-Type.")
    data = request.data  # a type no parser reads is a 415 here, malformed JSON a 400
    if isinstance(data, Mapping):
        refuse_unknown_fields(data, _NoFields())
    elif data not in (None, "", b""):
        raise ApiError("This call takes no body (or an empty JSON object).", code="invalid")


def takes_no_body(handler):
    """Decorate a view method whose request has no body: see `refuse_body`."""

    @functools.wraps(handler)
    def checked(self, request, *args, **kwargs):
        refuse_body(request)
        return handler(self, request, *args, **kwargs)

    checked.takes_no_body = True  # the schema documents its 415 (swarm/core/schema.py)
    return checked
