"""Serializer building blocks shared by every app's API: write bodies that refuse what they do not know.

DRF ignores fields a serializer does not declare. For a control plane that
hides mistakes: `{"branh": "dev"}` builds the default branch, and a client
can make the server parse 10 MB of a field nobody reads. Write serializers
mix in `RejectUnknownFields`, so an unknown or read-only field is a 400
`unknown_field` naming it and listing what the endpoint takes.

    class TriggerSerializer(RejectUnknownFields, serializers.Serializer):
        branch = serializers.CharField(required=False)

DRF's `CharField` also takes numbers (`5` becomes `"5"`) and its
`IntegerField` takes `"5"` and `5.0`; `StrictCharField` and
`StrictIntegerField` take only a JSON string and a JSON integer, so a body
means what it says. `StrictIntegerField` is range-checked to 32 bits by
default, as an `IntegerField` column stores.
"""
from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers

from swarm.core.inputs import MAX_INT32

MIN_INT32 = -MAX_INT32 - 1


def refuse_unknown_fields(data, serializer: serializers.Serializer) -> None:
    """A 400 `unknown_field` when `data` (a mapping) has a key `serializer` does not take as input.

    For bodies a view reads itself (a streamed multipart form) but documents with a serializer.
    """
    if not isinstance(data, Mapping):
        return
    writable = {name for name, field in serializer.fields.items() if not field.read_only}
    unknown = sorted(str(name) for name in data if name not in writable)
    if unknown:
        accepted = ", ".join(sorted(writable)) or "no fields"
        raise serializers.ValidationError(
            {unknown[0]: [serializers.ErrorDetail(
                f"unknown field; this endpoint takes {accepted}", code="unknown_field")]})


class RejectUnknownFields:
    """A serializer mixin: a body field the serializer does not take is an error, not silently dropped."""

    def to_internal_value(self, data):
        refuse_unknown_fields(data, self)
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A CharField that takes only strings (DRF's turns `5` into `"5"` and refuses only other types)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An IntegerField that takes only integers (not `"5"`, `5.0` or `true`), 32-bit unless told otherwise."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", MIN_INT32)
        kwargs.setdefault("max_value", MAX_INT32)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)
