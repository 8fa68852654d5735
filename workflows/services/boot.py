"""What the boot side calls: the metadata service and the events the boot script reports.

The boot script (`swarm-agent boot`) authenticates with the execution's
metadata token. A boot that died without reporting its end is failed by its
runtime supervisor's report (`workflows/services/runtime_reports.py`).
"""
from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from bundles.downloads import bundle_download_url
from swarm.core.errors import Conflict
from workflows.choices import ExecutionEventType, ExecutionStatus
from workflows.models import Execution
from workflows.services.executions import (
    execution_events_append,
    execution_lock,
    execution_move_to,
    execution_status_save,
)
from workflows.services.secrets import secrets_for_workflow

#: The most events one report may carry (EventReportSerializer refuses more).
MAX_EVENTS_PER_REPORT = 1000


def execution_metadata_serve(*, execution: Execution, remote_addr: str = "") -> dict:
    """What the boot script needs, including decrypted secrets; records `metadata_served`."""
    with transaction.atomic():
        execution = execution_lock(execution_id=execution.pk)
        if execution.is_finished:
            raise Conflict("The execution has ended.", code="execution_finished")
        workflow = execution.workflow
        secrets = secrets_for_workflow(workflow=workflow)
        version = execution.version
        body = {
            "execution_id": execution.pk,
            "bundle_url": bundle_download_url(version.bundle),
            "bundle_hash": version.bundle.sha256,
            "bundle_size": version.bundle.size,
            "runtime": workflow.runtime,
            "entrypoint": workflow.entrypoint,
            "memory_mb": workflow.memory_mb,
            "timeout_sec": execution.timeout_sec,
            "env": execution.env,
            "inputs": execution.inputs,
            "secrets": secrets,
        }
        if execution_move_to(execution=execution, status=ExecutionStatus.BOOTING):
            execution_status_save(execution=execution)
        execution_events_append(execution=execution, events=[{
            "type": ExecutionEventType.METADATA_SERVED,
            "message": f"metadata served to {remote_addr or 'the boot script'}",
            "data": {"secrets": sorted(secrets), "bundle_hash": version.bundle.sha256},
        }])
    return body


def execution_report(*, execution: Execution, events, first: int | None = None) -> Execution:
    """Record events reported by the boot script and apply the status they imply.

    `events` are as `EventReportSerializer` (workflows/api) validated them:
    dicts of `type` (one of BOOT_REPORTED_EVENTS), `stream`, `message` (a
    string) and `data` (an object; an `exited` event's carries an int32
    `exit_code`). Any boot event → booting; `started` → running (the timeout clock starts);
    `exited` → succeeded (exit code 0) or failed; `error` → failed. A
    terminal execution accepts nothing more (409 `execution_finished`).
    `first` (the index of the batch's first event among all the boot has
    reported) makes a retried batch idempotent: events already stored are
    skipped.
    """
    cleaned = [{"type": event["type"], "stream": event.get("stream", ""), "message": event.get("message", ""),
                "data": event.get("data") or {}} for event in events]
    with transaction.atomic():
        execution = execution_lock(execution_id=execution.pk)
        if execution.is_finished:
            raise Conflict(f"Execution {execution.pk} has ended ({execution.status}).", code="execution_finished")
        if first is not None:
            cleaned = cleaned[max(0, execution.boot_reported - first):]
            execution.boot_reported = max(execution.boot_reported, first + len(events))
            Execution.objects.filter(pk=execution.pk).update(boot_reported=execution.boot_reported)
        secret_values = secrets_for_workflow(workflow=execution.workflow).values()
        if cleaned:
            execution_events_append(execution=execution, events=cleaned, secret_values=secret_values)
        for event in cleaned:
            event_type = event["type"]
            if event_type == ExecutionEventType.STARTED:
                if execution_move_to(execution=execution, status=ExecutionStatus.RUNNING):
                    execution.started_at = timezone.now()
                    execution.deadline_at = execution.started_at + timedelta(seconds=execution.timeout_sec)
            elif event_type == ExecutionEventType.EXITED:
                code = event["data"]["exit_code"]
                outcome = ExecutionStatus.SUCCEEDED if code == 0 else ExecutionStatus.FAILED
                if event["data"].get("timed_out") is True:
                    outcome = ExecutionStatus.TIMED_OUT
                if execution_move_to(execution=execution, status=outcome):
                    execution.exit_code = code
            elif event_type == ExecutionEventType.ERROR:
                execution_move_to(execution=execution, status=ExecutionStatus.FAILED)
            else:
                execution_move_to(execution=execution, status=ExecutionStatus.BOOTING)
        execution_status_save(execution=execution)
    return execution

