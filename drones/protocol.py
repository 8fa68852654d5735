"""The heartbeat's input: one parser shared by DroneHeartbeatView and the event-loop fast path (drones/fastpath.py).

`heartbeat_parse` checks the fields the heartbeat and its hooks read and
returns the body the hooks get; it raises ApiError (400) with the answer
both paths give. HeartbeatSerializer (drones/api/serializers.py) describes
the same body for the OpenAPI schema only.
"""
from __future__ import annotations

import json
from typing import NamedTuple

from drones.choices import DroneSandbox
from swarm.core.errors import ApiError

#: The largest `metrics` object a heartbeat may carry, as JSON.
MAX_METRICS_BYTES = 16 * 1024
#: The most build ids one heartbeat may report running (a drone's capacity is at most 1,024).
MAX_RUNNING_BUILDS = 1024
MAX_BUILD_ID = 2**63 - 1
#: The sandbox modes an agent may report (UNKNOWN is only the absence of a report; drones/sandbox.py).
REPORTED_MODES = (DroneSandbox.BUBBLEWRAP, DroneSandbox.NONE, DroneSandbox.UNAVAILABLE)
#: The container engines an agent may report running build images with ("": none works there).
CONTAINER_ENGINES = ("", "podman", "docker")
#: The implicit label of a drone on which some engine ran an image for real: what a job with an `image` requires
#: (drones/sandbox.py sets it; here, where builds.config can read it without loading models).
CONTAINER_LABEL = "container:oci"


class SandboxReport(NamedTuple):
    """An agent's report of what it offers builds: its sandbox, and the container engine it can run images with."""

    mode: str
    detail: str
    container_engine: str = ""
    container_detail: str = ""


def parse_sandbox_report(report, *, field: str = "sandbox") -> SandboxReport:
    """The agent's report checked, or a 400 naming the field.

    `containers` ({engine, detail}; engine `podman`, `docker` or "" for none)
    is optional: an agent that sends none runs no containers.
    """
    if not isinstance(report, dict):
        raise ApiError(f"{field}: must be an object {{mode, detail}}", code="invalid", field=field)
    mode, detail = report.get("mode"), report.get("detail", "")
    if mode not in [m.value for m in REPORTED_MODES]:
        raise ApiError(f"{field}.mode: must be one of {', '.join(m.value for m in REPORTED_MODES)}",
                       code="invalid", field=f"{field}.mode")
    if not isinstance(detail, str) or "\x00" in detail:
        raise ApiError(f"{field}.detail: must be text", code="invalid", field=f"{field}.detail")
    containers = report.get("containers") or {}
    if not isinstance(containers, dict):
        raise ApiError(f"{field}.containers: must be an object {{engine, detail}}", code="invalid",
                       field=f"{field}.containers")
    engine, engine_detail = containers.get("engine") or "", containers.get("detail", "")
    if engine not in CONTAINER_ENGINES:
        raise ApiError(f"{field}.containers.engine: must be one of {', '.join(CONTAINER_ENGINES[1:])} or empty",
                       code="invalid", field=f"{field}.containers.engine")
    if not isinstance(engine_detail, str) or "\x00" in engine_detail:
        raise ApiError(f"{field}.containers.detail: must be text", code="invalid", field=f"{field}.containers.detail")
    return SandboxReport(mode, detail[:300], engine, engine_detail[:300])


def _build_id(value) -> int | None:
    """A reported build id, or None for an entry that names no build (skipped, as agents always did)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 < value <= MAX_BUILD_ID:
        return value
    return None


def heartbeat_parse(body) -> dict:
    """The heartbeat body with `metrics` (JSON text as well), `running_build_ids` and `payload_hashes` checked.

    Returns the body with `metrics` (a dict), `metrics_json` (its encoding,
    for the statement), `running_build_ids` (a list of ints: entries that
    name no build are dropped) and `payload_hashes` (a dict); other fields
    pass through to the hooks as they came.
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError("The heartbeat body must be a JSON object.", code="invalid")
    metrics = body.get("metrics", {})
    if metrics is None:
        metrics = {}
    if not isinstance(metrics, dict):
        raise ApiError("metrics must be a JSON object.", code="invalid", field="metrics")
    metrics_json = json.dumps(metrics)
    if len(metrics_json) > MAX_METRICS_BYTES:
        raise ApiError(f"metrics must stay under {MAX_METRICS_BYTES} bytes of JSON.", code="too_large",
                       field="metrics")
    running = body.get("running_build_ids")
    if running is None:
        running = []
    if not isinstance(running, list) or len(running) > MAX_RUNNING_BUILDS:
        raise ApiError(f"running_build_ids must be a list of at most {MAX_RUNNING_BUILDS} build ids.",
                       code="invalid", field="running_build_ids")
    hashes = body.get("payload_hashes")
    if hashes is None:
        hashes = {}
    if not isinstance(hashes, dict):
        raise ApiError("payload_hashes must be a JSON object (payload type → sha256).", code="invalid",
                       field="payload_hashes")
    parsed = {}
    if body.get("sandbox") is not None:  # checked before anything is written (the sandbox hook records it)
        report = parse_sandbox_report(body["sandbox"])
        parsed["sandbox"] = {"mode": report.mode, "detail": report.detail,
                             "containers": {"engine": report.container_engine, "detail": report.container_detail}}
    return {**body, **parsed, "metrics": metrics, "metrics_json": metrics_json,
            "running_build_ids": [pk for pk in map(_build_id, running) if pk is not None],
            "payload_hashes": hashes}
