"""The drone build protocol's inputs: one parser per agent request, shared by the views and the event-loop fast paths.

Each parser takes what arrived (a decoded JSON body, or the log patch's
headers and bytes) and returns what the service needs, or raises ApiError
with the answer both paths give (`{error, detail, field}`, 400 or 413). The
DRF serializers in builds/api/serializers.py describe the same bodies for
the OpenAPI schema only; nothing validates with them. Fields an agent sends
that a parser does not know are ignored (agents and servers of different
versions meet); what a value *means* (is this failure reason known, does the
drone hold this build) is the services' to judge.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from swarm.core.errors import ApiError, PayloadTooLarge
from swarm.core.inputs import MAX_INT32, parse_int

#: The largest log PATCH a drone may send (told to it in the claim payload).
MAX_LOG_PATCH_BYTES = 1024 * 1024
#: `Content-Range` of a log PATCH: `<start>-<end>` (inclusive), optionally `bytes ` and a `/<total>`.
CONTENT_RANGE = re.compile(r"^(?:bytes\s+)?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
#: The most free slots a claim may announce, and the most labels and characters per label it may carry.
MAX_FREE_SLOTS = 1000
MAX_CLAIM_LABELS = 64
MAX_LABEL_LENGTH = 100
#: The states an agent may report for its attempt.
AGENT_STATES = ("running", "success", "failed", "canceled")


def _object(body, what: str) -> dict:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(f"The {what} body must be a JSON object.", code="invalid")
    return body


def _text(body: dict, name: str, *, max_length: int, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(f"{name}: must be a string", code="invalid", field=name)
    if len(value) > max_length:
        raise ApiError(f"{name}: at most {max_length} characters", code="max_length", field=name)
    return value


def _optional_int(body: dict, name: str, *, minimum: int | None, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"{name}: must be an integer", code="invalid", field=name)
    return parse_int(value, field=name, minimum=minimum, maximum=maximum)


@dataclass(frozen=True)
class ClaimRequest:
    """`POST /builds/request`: how many builds the drone can start, and its labels (None: use the registered ones)."""

    free_slots: int
    labels: list[str] | None


def claim_request_parse(body) -> ClaimRequest:
    """The claim body (`{free_slots?, labels?}`), or ApiError 400."""
    body = _object(body, "claim")
    free_slots = body.get("free_slots", 1)
    if isinstance(free_slots, bool) or not isinstance(free_slots, int):
        raise ApiError("free_slots: must be an integer", code="invalid", field="free_slots")
    free_slots = parse_int(free_slots, field="free_slots", minimum=0, maximum=MAX_FREE_SLOTS)
    labels = body.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or len(labels) > MAX_CLAIM_LABELS:
            raise ApiError(f"labels: must be a list of at most {MAX_CLAIM_LABELS} labels", code="invalid",
                           field="labels")
        for index, label in enumerate(labels):
            if not isinstance(label, str) or not label or label.strip() != label or len(label) > MAX_LABEL_LENGTH:
                raise ApiError(f"labels[{index}]: a label is 1-{MAX_LABEL_LENGTH} characters without surrounding "
                               "spaces", code="invalid", field=f"labels[{index}]")
    return ClaimRequest(free_slots=free_slots, labels=labels)


@dataclass(frozen=True)
class LogPatch:
    """`PATCH /builds/<id>/log`: where the bytes start, the bytes, and the attempt they belong to (None: current)."""

    start: int
    data: bytes
    attempt_number: int | None


def log_patch_parse(*, content_range: str | None, data: bytes, build_attempt: str | None) -> LogPatch:
    """A log patch from its `Content-Range` and `Build-Attempt` headers and its bytes, or ApiError (400, 413)."""
    match = CONTENT_RANGE.match((content_range or "").strip())
    if not match:
        raise ApiError("Content-Range: must be '<start>-<end>'", code="invalid", field="Content-Range")
    start, end = int(match.group(1)), int(match.group(2))
    if len(data) > MAX_LOG_PATCH_BYTES:
        raise PayloadTooLarge(f"A log patch carries at most {MAX_LOG_PATCH_BYTES} bytes.")
    if end < start or end - start + 1 != len(data):
        raise ApiError(f"Content-Range {start}-{end} does not match the {len(data)} bytes sent.",
                       code="invalid", field="Content-Range")
    attempt_number = None
    if build_attempt is not None and build_attempt.strip():
        attempt_number = parse_int(build_attempt.strip(), field="Build-Attempt", minimum=1, maximum=MAX_INT32)
    return LogPatch(start=start, data=data, attempt_number=attempt_number)


@dataclass(frozen=True)
class StateUpdate:
    """`PUT /builds/<id>/state`: the attempt's new state and, with a final state, the log's size and checksum."""

    state: str
    attempt_number: int | None = None
    exit_code: int | None = None
    failure_reason: str = ""
    log_bytesize: int | None = None
    log_checksum: str = ""
    commit_sha: str = ""
    branch: str = ""


def state_update_parse(body) -> StateUpdate:
    """The state body, or ApiError 400 (a final state needs `log_bytesize`)."""
    body = _object(body, "state")
    state = body.get("state")
    if state is None:
        raise ApiError("state: this field is required", code="missing_field", field="state")
    if state not in AGENT_STATES:
        raise ApiError("state: must be running, success, failed or canceled", code="invalid_choice", field="state")
    update = StateUpdate(
        state=state,
        attempt_number=_optional_int(body, "attempt", minimum=1, maximum=MAX_INT32),
        exit_code=_optional_int(body, "exit_code", minimum=-MAX_INT32 - 1, maximum=MAX_INT32),
        failure_reason=_text(body, "failure_reason", max_length=64),
        log_bytesize=_optional_int(body, "log_bytesize", minimum=0, maximum=2**63 - 1),
        log_checksum=_text(body, "log_checksum", max_length=80),
        commit_sha=_text(body, "commit_sha", max_length=64),
        branch=_text(body, "branch", max_length=200),
    )
    if state != "running" and update.log_bytesize is None:
        raise ApiError("log_bytesize: required with a final state", code="missing_field", field="log_bytesize")
    return update
