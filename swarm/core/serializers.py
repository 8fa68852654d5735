"""Serializer building blocks shared by every app's API: write bodies that refuse what they do not know.

DRF ignores fields a serializer does not declare. For a control plane that
hides mistakes: `{"branh": "dev"}` builds the default branch, and a client
can make the server parse 10 MB of a field nobody reads. Write serializers
mix in `RejectUnknownFields`, so an unknown or read-only field is a 400
`unknown_field` naming it and listing what the endpoint takes.

    class TriggerSerializer(RejectUnknownFields, serializers.Serializer):
        branch = serializers.CharField(required=False)
"""
from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers


class RejectUnknownFields:
    """A serializer mixin: a body field the serializer does not take is an error, not silently dropped."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(name) for name in data if name not in writable)
            if unknown:
                accepted = ", ".join(sorted(writable)) or "no fields"
                raise serializers.ValidationError(
                    {unknown[0]: [serializers.ErrorDetail(
                        f"unknown field; this endpoint takes {accepted}", code="unknown_field")]})
        return super().to_internal_value(data)
