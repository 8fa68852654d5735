"""The heartbeat answered on the server's event loop (see swarm/core/fast_routes.py).

Same input checks, same statement and same answer as DroneHeartbeatView:
`drones.services.heartbeat.drone_heartbeat_async` sits next to `drone_heartbeat` and
shares its statement. Returns None — and Django's view answers — for
anything but a valid heartbeat of a valid drone token: a bad body or token
(the view gives the precise 400/401/403/404), or a body that a heartbeat hook
without an async variant acts on. (The builds hook has one: a drone reporting
running builds gets its leases renewed and its cancel list here too.)
"""
from __future__ import annotations

from drones.services.heartbeat import drone_heartbeat_async, heartbeat_needs_sync_hooks
from swarm.core.errors import ApiError
from swarm.core.fast_routes import FastRequest, FastResponse


async def heartbeat(request: FastRequest) -> FastResponse | None:
    """`POST /api/v1/drones/heartbeat` when it is a plain heartbeat of a valid drone token."""
    token = request.bearer_token()
    body = request.json()
    if token is None or not isinstance(body, dict) or heartbeat_needs_sync_hooks(body=body):
        return None
    try:
        answer = await drone_heartbeat_async(token=token, body=body)
    except ApiError:
        return None  # the view gives the 400
    if answer is None:
        return None
    answer.pop("drone_id")
    return FastResponse(answer)
