"""The heartbeat answered on the server's event loop (see swarm/core/fast_routes.py).

Same input checks, same statement and same answer as DroneHeartbeatView
(drones.services.heartbeat_statement / HEARTBEAT_SQL / heartbeat_answer),
on an async connection. Returns None — and Django's view answers — for
anything but a plain heartbeat of a valid drone token: a bad body or token
(the view gives the precise 400/401/403/404) or a body a heartbeat hook acts
on (a drone reporting running builds).
"""
from __future__ import annotations

from drones.heartbeat_hooks import heartbeat_needs_hooks
from drones.services import FIRST_HEARTBEAT_SQL, HEARTBEAT_SQL, first_heartbeat_params, heartbeat_answer, \
    heartbeat_statement
from swarm.core import async_db
from swarm.core.errors import ApiError
from swarm.core.fast_routes import FastRequest, FastResponse


async def heartbeat(request: FastRequest) -> FastResponse | None:
    """`POST /api/v1/drones/heartbeat` when it is a plain heartbeat of a valid drone token."""
    token = request.bearer_token()
    body = request.json()
    if token is None or not isinstance(body, dict) or heartbeat_needs_hooks(body):
        return None
    try:
        statement = heartbeat_statement(token=token, metrics=body.get("metrics", {}))
    except ApiError:
        return None
    if statement is None:
        return None
    pool = await async_db.pool()
    async with pool.connection() as connection:
        cursor = await connection.execute(HEARTBEAT_SQL, statement.params)
        row = await cursor.fetchone()
        if row is None:
            return None
        answer, first = heartbeat_answer(row)
        if first:
            await connection.execute(FIRST_HEARTBEAT_SQL, first_heartbeat_params(drone_id=answer["drone_id"],
                                                                                 now=statement.now))
    answer.pop("drone_id")
    return FastResponse(answer)
