"""Writes on the runtime side of executions: the supervisor's token, its exit report, the spawn's runtime choice.

A local runtime's supervisor (see `workflows/runtimes/supervised.py`) holds a
*runtime token* of its own — scope `execution`, subject
`execution_runtime:<id>` — distinct from the boot's metadata token: it reads
no metadata and no secrets, it only reports how the sandbox or VM ended
(`runtime_exited`), and it stays valid past the execution's end so that
report (console tail, exit status) lands even after the boot reported its
own exit. It works once: the report revokes it.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from swarm.core.choices import TokenScope
from swarm.core.errors import ApiError
from swarm.core.services import api_token_issue, api_tokens_revoke_for_subject
from workflows.choices import ExecutionEventType, ExecutionStatus
from workflows.models import Execution, Workflow
from workflows.runtimes import RuntimeUnavailable, get_runtime, runtime_names

RUNTIME_SUBJECT = "execution_runtime"
#: How long past the execution's own limits the supervisor may still report.
RUNTIME_TOKEN_GRACE = timedelta(hours=1)
CONSOLE_TAIL_CHARS = 8192


class RuntimeUnavailableError(ApiError):
    """422: the chosen runtime cannot start this execution on this control plane."""

    status_code = 422
    code = "runtime_unavailable"


def runtime_for_spawn(*, workflow: Workflow, requested: str | None) -> str:
    """The runtime a spawn uses: the requested one, else the workflow's, else the default; checked.

    An unknown requested name is a 400 naming the registered ones; a runtime
    that cannot start this workflow here (QEMU or the image missing, more
    memory than the host has) is a 422 naming the reason.
    """
    known = runtime_names()
    if requested:
        if requested not in known:
            raise ApiError(f"Unknown runtime {requested!r}; known runtimes: {', '.join(known)}.", code="invalid",
                           field="runtime")
        name = requested
    else:
        name = workflow.execution_runtime or settings.SWARM_EXECUTION_RUNTIME
        if name not in known:
            raise RuntimeUnavailableError(f"The workflow's runtime {name!r} is not registered here; known runtimes: "
                                          f"{', '.join(known)}.", field="runtime")
    try:
        get_runtime(name).check_spawn(workflow)
    except RuntimeUnavailable as unavailable:
        raise RuntimeUnavailableError(unavailable.reason[0].upper() + unavailable.reason[1:] + ".",
                                      code=unavailable.code, field=unavailable.field or "runtime") from None
    return name


def supervisor_deadline_seconds(execution: Execution) -> int:
    """The supervisor's own backstop: kill the sandbox or VM past every limit the control plane sets."""
    return settings.SWARM_EXECUTION_BOOT_TIMEOUT + execution.timeout_sec + 120


def runtime_token_issue(*, execution: Execution) -> str:
    """A new runtime token for the execution's supervisor (plaintext, shown only to it)."""
    lifetime = timedelta(seconds=supervisor_deadline_seconds(execution)) + RUNTIME_TOKEN_GRACE
    _, plaintext = api_token_issue(
        scope=TokenScope.EXECUTION, name=f"execution-{execution.pk}-runtime", tenant=execution.tenant,
        subject_type=RUNTIME_SUBJECT, subject_id=str(execution.pk), expires_at=timezone.now() + lifetime,
    )
    return plaintext


def _clean_runtime_report(body) -> dict:
    if not isinstance(body, dict) or body.get("type") != ExecutionEventType.RUNTIME_EXITED:
        raise ApiError("A runtime report is {\"type\": \"runtime_exited\", \"data\": {...}}.", code="invalid",
                       field="type")
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("reason", ""), str):
        raise ApiError("data must be an object with a reason string.", code="invalid", field="data")
    data = dict(data)
    data["console_tail"] = str(data.get("console_tail") or "")[-CONSOLE_TAIL_CHARS:]
    return data


def execution_runtime_report(*, execution_id: int, body) -> Execution:
    """Record how the sandbox or VM ended; an execution still live then failed silently and fails now.

    The `runtime_exited` event keeps the exit status, the reason, the
    supervisor's timeline and the console tail (secrets masked). A live
    execution gets an `error` event with the report's code (`vm_exited`,
    `boot_exited`, …) and fails. The runtime token dies with the report.
    """
    from workflows.execution_services import _append_events, _locked, _move_to, _save_status, secrets_for_workflow

    data = _clean_runtime_report(body)
    with transaction.atomic():
        execution = _locked(execution_id)
        secret_values = secrets_for_workflow(execution.workflow).values()
        reason = data.get("reason") or "the runtime exited"
        events = [{"type": ExecutionEventType.RUNTIME_EXITED, "message": reason, "data": data}]
        if _move_to(execution, ExecutionStatus.FAILED):
            _save_status(execution)
            events.append({"type": ExecutionEventType.ERROR,
                           "message": f"{reason} before the boot reported the end of the execution",
                           "data": {"code": data.get("code") or "runtime_exited",
                                    "returncode": data.get("returncode")}})
        _append_events(execution, events, secret_values=secret_values)
        api_tokens_revoke_for_subject(subject_type=RUNTIME_SUBJECT, subject_id=str(execution.pk))
    return execution


def runtime_report_target(principal, execution_id: int) -> int:
    """The execution a runtime token may report on (404 for any other)."""
    from swarm.core.errors import NotFound

    if str(principal.subject_id) != str(execution_id) or not Execution.objects.filter(pk=execution_id).exists():
        raise NotFound(f"No execution {execution_id}.")
    return execution_id

