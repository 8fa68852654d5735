"""Build claims and log appends answered on the server's event loop (see swarm/core/fast_routes.py).

`POST /api/v1/builds/request` is what every idle drone sends in a loop, and a
running build streams its log as `PATCH /api/v1/builds/<id>/log`. Through
the views each costs about ten round trips to the database. Here
`build_claim_async` (builds/services/claims.py) sends the claim in a group with the
claims that arrive with it, one database call for the group
(builds/claim_groups.py), and `build_log_append_async` is one call of a
database function (SQL in builds/agent_sql.py).

These handlers answer only what they are sure of; the views answer the rest
(every refusal among them): a body the serializer would refuse, an unknown or
foreign token, a build or drone that is gone, a queue with a concurrency cap
or a tenant rate limit (applied step by step under the queue lock), a log
patch at the wrong offset (416), for a superseded attempt (409), or past
the log's size limit.
"""
from __future__ import annotations

import logging
import time

from asgiref.sync import sync_to_async
from django.db import connection

from builds import metrics, services
from builds.claiming import claim_payload
from builds.protocol import CONTENT_RANGE, MAX_LOG_PATCH_BYTES
from swarm.core.errors import error_body
from swarm.core.fast_routes import FastRequest, FastResponse
from swarm.core.secret_box import SecretUndecryptable

logger = logging.getLogger(__name__)


def _claim_request(body) -> tuple[int, list[str] | None] | None:
    """(free_slots, labels) when ClaimRequestSerializer would accept the body as it is, else None."""
    if not isinstance(body, dict):
        return None
    free_slots = body.get("free_slots", 1)
    labels = body.get("labels")
    if type(free_slots) is not int or not 0 <= free_slots <= 1000:
        return None
    if labels is not None and not (isinstance(labels, list) and all(
            isinstance(label, str) and 0 < len(label) <= 100 and label.strip() == label for label in labels)):
        return None
    return free_slots, labels


async def claim(request: FastRequest) -> FastResponse | None:
    """`POST /api/v1/builds/request`: 201 with a build, 204 with none — or None for the view to answer."""
    wanted = _claim_request(request.json())
    token = request.bearer_token()
    if wanted is None or token is None:
        return None
    free_slots, labels = wanted
    started = time.perf_counter()
    try:
        outcome = await services.build_claim_async(token=token, free_slots=free_slots, labels=labels)
    except services.ClaimUnanswerable as error:
        return FastResponse(error_body(error.code, error.detail), status=error.status_code)
    if outcome is None:
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


def _log_patch(request: FastRequest) -> tuple[int, int, bytes, int | None] | None:
    """(build id, start, data, attempt number) of a log PATCH the view would accept as it is, else None."""
    match = CONTENT_RANGE.match(request.headers.get("content-range", "").strip())
    data = request.body
    if not match or not data or len(data) > MAX_LOG_PATCH_BYTES:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    if end < start or end - start + 1 != len(data):
        return None
    attempt_header = request.headers.get("build-attempt")
    attempt_number = int(attempt_header) if attempt_header and attempt_header.isdigit() else None
    return int(request.path_params["build_id"]), start, data, attempt_number


async def log_append(request: FastRequest) -> FastResponse | None:
    """`PATCH /api/v1/builds/<id>/log` at the right offset of the drone's current attempt — else the view answers."""
    patch = _log_patch(request)
    token = request.bearer_token()
    if patch is None or token is None:
        return None
    build_id, start, data, attempt_number = patch
    appended = await services.build_log_append_async(token=token, build_id=build_id, start=start, data=data,
                                                     attempt_number=attempt_number)
    if appended is None:
        return None
    return FastResponse(None, status=202, headers=[(b"range", f"0-{appended.log_size}".encode()),
                                                   (b"job-status", appended.build_state.encode())])
