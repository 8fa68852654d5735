"""The drone runtime's agent side: `POST /api/v1/executions/request` and the `execution_claim` WebSocket message.

Both are a drone (drone token) asking for a queued execution; both call
`execution_drone_claim`, so the claim is the same whichever way it came. The
HTTP call is the agent's poll: it also renews the leases of the executions
the drone reports running and answers which of them it must stop.
"""
from __future__ import annotations

from channels.db import database_sync_to_async
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from drones.events import drone_send_async
from drones.selectors import drone_id_for_principal
from swarm.core.api import ScopedAPIView, error_responses
from swarm.core.choices import TokenScope
from swarm.core.serializers import RejectUnknownFields
from workflows.services.drone_executions import drone_executions_renew, execution_drone_claim

SANDBOXES = ("bwrap", "none")


class ExecutionRequestSerializer(RejectUnknownFields, serializers.Serializer):
    free_slots = serializers.IntegerField(min_value=0, max_value=1000, default=1)
    running_execution_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False,
                                                  default=list, max_length=1000)
    sandbox = serializers.ChoiceField(choices=SANDBOXES, required=False,
                                      help_text="What the drone runs a claimed execution's boot in.")


class ExecutionRequestView(ScopedAPIView):
    """`POST /executions/request`: renew running executions' leases, learn which to stop, maybe claim one."""

    read_scopes = frozenset({TokenScope.DRONE})
    write_scopes = frozenset({TokenScope.DRONE})

    @extend_schema(request=ExecutionRequestSerializer, responses={200: OpenApiTypes.OBJECT, **error_responses(400)},
                   summary="Poll for a drone-runtime execution (drone token)", tags=["agent"])
    def post(self, request):
        body = ExecutionRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        drone_id = drone_id_for_principal(self.principal)
        stop = drone_executions_renew(drone_id=drone_id, running_execution_ids=data["running_execution_ids"])
        claimed = None
        if data["free_slots"] > 0:
            claimed = execution_drone_claim(drone_id=drone_id, sandbox=data.get("sandbox", ""))
        return Response({"execution": claimed, "stop_execution_ids": stop,
                         "lease_seconds": settings.SWARM_DRONE_EXECUTION_LEASE_SECONDS})


async def handle_execution_claim(drone_id: int, message: dict) -> None:
    """`{"type": "execution_claim", "execution_id"?, "sandbox"?}` over the WebSocket → `execution_start` or `_taken`."""
    execution_id = message.get("execution_id")
    if execution_id is not None and (not isinstance(execution_id, int) or isinstance(execution_id, bool)):
        await drone_send_async(drone_id, {"type": "error", "error": "invalid", "field": "execution_id",
                                          "detail": "execution_id must be an integer"})
        return
    sandbox = message.get("sandbox") if message.get("sandbox") in SANDBOXES else ""
    claimed = await database_sync_to_async(execution_drone_claim)(drone_id=drone_id, execution_id=execution_id,
                                                                  sandbox=sandbox)
    if claimed is None:
        await drone_send_async(drone_id, {"type": "execution_taken", "execution_id": execution_id})
        return
    await drone_send_async(drone_id, {"type": "execution_start", **claimed})
