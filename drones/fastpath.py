"""The heartbeat answered on the server's event loop (see swarm/core/fast_routes.py).

Same parser (drones.protocol.heartbeat_parse), statement and answer as
DroneHeartbeatView: `drones.services.heartbeat.drone_heartbeat_async` sits
next to `drone_heartbeat` and shares its statement. A body the parser
refuses gets the view's 400 from here. Django's view answers — before
anything is written — a token the statement does not find (it gives the
precise 401/403/404) and a body that a heartbeat hook without an async
variant acts on. (The builds hook has one: a drone reporting running builds
gets its leases renewed and its cancel list here too.)
"""
from __future__ import annotations

from drones.protocol import heartbeat_parse
from drones.services.heartbeat import drone_heartbeat_async, heartbeat_needs_sync_hooks
from swarm.core.fast_routes import FastRequest, FastResponse


async def heartbeat(request: FastRequest) -> FastResponse | None:
    """`POST /api/v1/drones/heartbeat`: 200 with the answer, a 400 for a bad body, or None for the view."""
    token = request.bearer_token()
    if token is None:
        return None  # the view gives the 401 with its challenge
    body = heartbeat_parse(request.json())
    if heartbeat_needs_sync_hooks(body=body):
        return None
    answer = await drone_heartbeat_async(token=token, heartbeat=body)  # writes only when it finds the drone
    if answer is None:
        return None
    answer.pop("drone_id")
    return FastResponse(answer)
