"""The deploy report's input: one parser shared by PayloadAgentReportView and the event-loop fast path.

`agent_report_parse` takes the decoded JSON body of `POST /payloads/agent/report`
and returns what `payload_target_report` (the view) and
drones/payloads/fastpath.py (the event loop) apply, or raises ApiError (400)
with the answer both paths give (`{error, detail, field}`).
AgentReportSerializer (drones/payloads/api/serializers.py) describes the same
body for the OpenAPI schema only; nothing validates with it. Fields an agent
sends that the parser does not know are ignored (agents and servers of
different versions meet); whether the drone holds the target is the
service's to judge.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from swarm.core.errors import ApiError
from swarm.core.inputs import MAX_INT64, parse_int

#: The states an agent may report for one deploy (or revert), in order.
REPORTABLE_STATES = ("downloading", "installing", "verifying", "succeeded", "failed")
ACTIONS = ("deploy", "revert")
#: The most states one report may carry, and the longest reason of a state.
MAX_REPORT_STATES = 20
MAX_REASON_LENGTH = 2000
#: `current_sha256`: the sha256 `current` points at after the report, or empty.
SHA256_OR_EMPTY = re.compile(r"([0-9a-f]{64})?")


@dataclass(frozen=True)
class AgentReport:
    """What an agent did with one deploy_payload command: its target, the action and the states in order."""

    target_id: int
    action: str
    #: `{state, reason}` each (`at` too when the agent sent it).
    states: list[dict]
    current_sha256: str


def _state(entry, index: int) -> dict:
    field = f"states[{index}]"
    if not isinstance(entry, dict):
        raise ApiError(f"{field}: must be an object {{state, reason?, at?}}", code="invalid", field=field)
    state = entry.get("state")
    if state not in REPORTABLE_STATES:
        raise ApiError(f"{field}.state: must be one of {', '.join(REPORTABLE_STATES)}", code="invalid",
                       field=f"{field}.state")
    reason = entry.get("reason")
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise ApiError(f"{field}.reason: must be a string of at most {MAX_REASON_LENGTH} characters",
                       code="invalid", field=f"{field}.reason")
    parsed = {"state": state, "reason": reason}
    if "at" in entry:
        at = entry["at"]
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise ApiError(f"{field}.at: must be a number (seconds since the epoch)", code="invalid",
                           field=f"{field}.at")
        parsed["at"] = float(at)
    return parsed


def agent_report_parse(body) -> AgentReport:
    """The report body (`{target_id, action?, states, current_sha256?}`), or ApiError 400."""
    if not isinstance(body, dict):
        raise ApiError("The report body must be a JSON object.", code="invalid")
    target_id = body.get("target_id")
    if isinstance(target_id, bool) or not isinstance(target_id, int):
        raise ApiError("target_id: must be an integer", code="invalid", field="target_id")
    target_id = parse_int(target_id, field="target_id", minimum=1, maximum=MAX_INT64)
    action = body.get("action", "deploy")
    if action not in ACTIONS:
        raise ApiError(f"action: must be one of {', '.join(ACTIONS)}", code="invalid", field="action")
    states = body.get("states")
    if not isinstance(states, list) or not 1 <= len(states) <= MAX_REPORT_STATES:
        raise ApiError(f"states: must be a list of 1-{MAX_REPORT_STATES} states", code="invalid", field="states")
    current_sha256 = body.get("current_sha256")
    if current_sha256 is None:
        current_sha256 = ""
    if not isinstance(current_sha256, str) or not SHA256_OR_EMPTY.fullmatch(current_sha256):
        raise ApiError("current_sha256: must be a lowercase hex sha256, or empty", code="invalid",
                       field="current_sha256")
    return AgentReport(target_id=target_id, action=action,
                       states=[_state(entry, index) for index, entry in enumerate(states)],
                       current_sha256=current_sha256)
