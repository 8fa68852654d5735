"""Build claims and log appends answered on the server's event loop (see swarm/core/fast_routes.py).

`POST /api/v1/builds/request` is what every idle drone sends in a loop, and a
running build streams its log as `PATCH /api/v1/builds/<id>/log`. Through
the views each costs about ten round trips to the database. Here
`build_claim_async` (builds/services/claims.py) sends the claim in a group
with the claims that arrive with it, one database call for the group
(builds/claim_groups.py), and `build_log_append_async` is one call of a
database function (builds/sql/). Each request is parsed by the view's own
parser (builds/protocol.py).

Django's view answers — before anything is written — a body the parser
refuses (it authenticates first, so a bad token is its 401 whatever the
body), an unknown or foreign token, and a claim while a queue caps
concurrency or tenant start rates. Once the database call is made, every
answer is made here: a claim (201/204), a drone that is gone (404), a log
patch at the wrong offset (416), for a superseded attempt or an archived log
(409), past the log's size limit (413), and 500 when anything fails after
the claim or append may have been written.
"""
from __future__ import annotations

import logging
import time

from asgiref.sync import sync_to_async
from django.db import connection

from builds import metrics, services
from builds.claiming import claim_payload
from builds.protocol import claim_request_parse, log_patch_parse
from swarm.core.errors import error_body
from swarm.core.fast_routes import FastRequest, FastResponse
from swarm.core.inputs import MAX_INT64
from swarm.core.secret_box import SecretUndecryptable

logger = logging.getLogger(__name__)


async def claim(request: FastRequest) -> FastResponse | None:
    """`POST /api/v1/builds/request`: 201 with a build, 204 with none — or None for the view to answer."""
    token = request.bearer_token()
    if token is None:
        return None
    wanted = claim_request_parse(request.json())
    started = time.perf_counter()
    request.written = True  # the group's call claims: from here on this request is answered here
    outcome = await services.build_claim_async(token=token, free_slots=wanted.free_slots, labels=wanted.labels)
    if outcome is None:
        request.written = False  # the database wrote nothing for this request (unknown token, queue limits)
        return None
    metrics.CLAIM_SECONDS.observe(time.perf_counter() - started)
    canceling = outcome.canceling_build_ids
    headers = [(b"swarm-canceling-builds", ",".join(str(pk) for pk in canceling).encode())] if canceling else []
    if outcome.result is None:
        return FastResponse(None, status=204, headers=headers)
    try:
        payload = claim_payload(outcome.result)
    except SecretUndecryptable as undecryptable:
        # Claimed already (STYLE rule 13): fail the build here rather than hand it out or decline to the view.
        refused = await sync_to_async(_fail_undecryptable_claim)(outcome.result.claimed, undecryptable)
        return FastResponse(error_body(refused.code, refused.detail), status=refused.status_code, headers=headers)
    except Exception:  # noqa: BLE001 - the build is assigned now: never let the view claim another one
        logger.exception("claimed build %s could not be described to the drone; it returns to the queue when "
                         "its acknowledgement times out", outcome.result.claimed.build["id"])
        return FastResponse(error_body("server_error", "The claim could not be answered; ask again."), status=500)
    return FastResponse(payload, status=201,
                        headers=[(b"job-status", outcome.result.state.encode()), *headers])


def _fail_undecryptable_claim(claimed, error):
    """`build_fail_undecryptable_claim` on a worker thread; no request cycle closes its connection, so this does."""
    try:
        return services.build_fail_undecryptable_claim(claimed=claimed, error=error)
    finally:
        connection.close()


async def log_append(request: FastRequest) -> FastResponse | None:
    """`PATCH /api/v1/builds/<id>/log`: 202 with the log's size, or the view's refusal — or None for the view."""
    token = request.bearer_token()
    build_id = request.path_params["build_id"]
    if token is None or not 0 < build_id <= MAX_INT64:
        return None
    patch = log_patch_parse(content_range=request.headers.get("content-range"), data=request.body,
                            build_attempt=request.headers.get("build-attempt"))
    request.written = True  # the call appends: from here on this request is answered here
    appended = await services.build_log_append_async(token=token, build_id=build_id, start=patch.start,
                                                     data=patch.data, attempt_number=patch.attempt_number)
    if appended is None:
        request.written = False  # the token is no live drone token: the database wrote nothing
        return None
    return FastResponse(None, status=202, headers=[(b"range", f"0-{appended.log_size}".encode()),
                                                   (b"job-status", appended.build_state.encode())])
