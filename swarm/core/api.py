"""API base classes: the caller's principal and tenant scoping in one place."""
from rest_framework import serializers
from rest_framework.views import APIView

from swarm.core.permissions import request_principal
from swarm.core.principals import Principal


class ScopedAPIView(APIView):
    """Base view: `self.principal` is the authenticated caller (token or admin user)."""

    @property
    def principal(self) -> Principal:
        return request_principal(self.request)


class ErrorSerializer(serializers.Serializer):
    """The shape of every API error (for the OpenAPI schema)."""

    error = serializers.CharField()
    detail = serializers.CharField()
    field = serializers.CharField(required=False)
