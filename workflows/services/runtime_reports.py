"""Writes on the runtime side of executions: the supervisor's token and its exit report.

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
from swarm.core.errors import ApiError, NotFound
from swarm.core.services import api_token_issue, api_tokens_revoke_for_subject
from workflows.choices import ExecutionEventType, ExecutionStatus
from workflows.models import Execution
from workflows.services.executions import (
    execution_events_append,
    execution_lock,
    execution_move_to,
    execution_status_save,
)
from workflows.services.secrets import secrets_for_workflow

RUNTIME_SUBJECT = "execution_runtime"
#: How long past the execution's own limits the supervisor may still report.
RUNTIME_TOKEN_GRACE = timedelta(hours=1)
CONSOLE_TAIL_CHARS = 8192


def supervisor_deadline_seconds(*, execution: Execution) -> int:
    """The supervisor's own backstop: kill the sandbox or VM past every limit the control plane sets."""
    return settings.SWARM_EXECUTION_BOOT_TIMEOUT + execution.timeout_sec + 120


def runtime_token_issue(*, execution: Execution) -> str:
    """A new runtime token for the execution's supervisor (plaintext, shown only to it)."""
    lifetime = timedelta(seconds=supervisor_deadline_seconds(execution=execution)) + RUNTIME_TOKEN_GRACE
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
    data = _clean_runtime_report(body)
    with transaction.atomic():
        execution = execution_lock(execution_id=execution_id)
        secret_values = secrets_for_workflow(workflow=execution.workflow).values()
        reason = data.get("reason") or "the runtime exited"
        events = [{"type": ExecutionEventType.RUNTIME_EXITED, "message": reason, "data": data}]
        if execution_move_to(execution=execution, status=ExecutionStatus.FAILED):
            execution_status_save(execution=execution)
            events.append({"type": ExecutionEventType.ERROR,
                           "message": f"{reason} before the boot reported the end of the execution",
                           "data": {"code": data.get("code") or "runtime_exited",
                                    "returncode": data.get("returncode")}})
        execution_events_append(execution=execution, events=events, secret_values=secret_values)
        api_tokens_revoke_for_subject(subject_type=RUNTIME_SUBJECT, subject_id=str(execution.pk))
    return execution


def runtime_report_target(*, principal, execution_id: int) -> int:
    """The execution a runtime token may report on (404 for any other)."""
    if str(principal.subject_id) != str(execution_id) or not Execution.objects.filter(pk=execution_id).exists():
        raise NotFound(f"No execution {execution_id}.")
    return execution_id

