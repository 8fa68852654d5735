"""API base classes: the caller's principal and tenant scoping in one place."""
from rest_framework import serializers
from rest_framework.views import APIView

from swarm.core.pagination import ListPage
from swarm.core.permissions import request_principal
from swarm.core.principals import Principal


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


AUTH_ERROR_STATUSES = (401, 403)


def error_responses(*statuses: int) -> dict:
    """OpenAPI responses for error statuses, all with the one error shape; 401 and 403 are always included."""
    return {status: ErrorSerializer for status in sorted(set(statuses) | set(AUTH_ERROR_STATUSES))}
