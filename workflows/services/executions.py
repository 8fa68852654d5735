"""Executions: spawn, provision, the state changes and their events, cancel, timeouts, the reaper.

Every state change appends an `ExecutionEvent` under the execution's row
lock (`execution_lock`), which also numbers the events (`seq`) without gaps;
a status only moves forward (`execution_move_to`), and a terminal one kills
the execution's metadata token. What the boot script reports goes through
`workflows.services.boot`, on the same primitives.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from swarm.core.choices import TokenScope
from swarm.core.errors import ApiError, Conflict, NotFound
from swarm.core.live import live_changed_on_commit
from swarm.core.principals import Principal
from swarm.core.services import api_token_issue, api_tokens_revoke_for_subject, audit_record
from tenancy import quotas
from tenancy.quotas import tenant_lock_for_quota, tenant_quota_check
from workflows import tasks
from workflows.choices import STATUS_ORDER, TERMINAL_STATUSES, ExecutionEventType, ExecutionStatus
from workflows.models import Execution, ExecutionEvent, Workflow
from workflows.runtimes import RuntimeStartFailed, RuntimeUnavailable, get_runtime, runtime_names
from workflows.services.canary import canary_note_finished, canary_pick_version
from workflows.services.secrets import SECRET_NAME_PATTERN, mask_data, mask_secrets

logger = logging.getLogger(__name__)

EXECUTION_SUBJECT = "execution"
ENV_NAME_PATTERN = SECRET_NAME_PATTERN
MAX_MESSAGE_CHARS = 16 * 1024
# Extra life of a metadata token beyond the execution's own limits.
TOKEN_GRACE = timedelta(seconds=60)


def execution_events_append(*, execution: Execution, events: list[dict], secret_values=()) -> list[ExecutionEvent]:
    """Append events to a row-locked execution, masking secrets in every stored string."""
    rows = []
    for event in events:
        execution.last_seq += 1
        rows.append(ExecutionEvent(
            execution=execution, seq=execution.last_seq, type=event["type"], stream=event.get("stream", ""),
            message=mask_secrets(text=event.get("message", ""), secret_values=secret_values)[:MAX_MESSAGE_CHARS],
            data=mask_data(data=event.get("data") or {}, secret_values=secret_values),
        ))
    ExecutionEvent.objects.bulk_create(rows)
    Execution.objects.filter(pk=execution.pk).update(last_seq=execution.last_seq)
    live_changed_on_commit(f"execution:{execution.pk}", "executions")
    return rows


def execution_move_to(*, execution: Execution, status: str) -> bool:
    """Advance the (row-locked) execution's status; never backwards, never out of a terminal status."""
    if execution.status in TERMINAL_STATUSES:
        return False
    if STATUS_ORDER[status] < STATUS_ORDER[execution.status]:
        return False
    execution.status = status
    if status in TERMINAL_STATUSES:
        execution.finished_at = timezone.now()
        execution.deadline_at = None
        api_tokens_revoke_for_subject(subject_type=EXECUTION_SUBJECT, subject_id=str(execution.pk))
        canary_note_finished(execution=execution)
    return True


def execution_status_save(*, execution: Execution) -> None:
    """Write the fields a status change touches (the caller holds the row lock)."""
    execution.save(update_fields=["status", "exit_code", "started_at", "finished_at", "deadline_at",
                                  "runtime_state"])
    live_changed_on_commit(f"execution:{execution.pk}", "executions")


def execution_lock(*, execution_id: int) -> Execution:
    """The execution, row-locked (only its own row: the workflow joined in stays unlocked)."""
    return Execution.objects.select_for_update(of=("self",)).select_related("workflow").get(pk=execution_id)


def _clean_env(env) -> dict[str, str]:
    if env in (None, ""):
        return {}
    if not isinstance(env, dict):
        raise ApiError("env must be an object of NAME: value strings.", code="invalid", field="env")
    cleaned = {}
    for name, value in env.items():
        if not ENV_NAME_PATTERN.match(str(name)):
            raise ApiError(f"env name {name!r} is not a valid environment variable name.", code="invalid",
                           field="env")
        if not isinstance(value, (str, int, float, bool)):
            raise ApiError(f"env value of {name} must be a string.", code="invalid", field="env")
        cleaned[str(name)] = str(value)
    return cleaned


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


def _clean_labels(labels, *, runtime: str, workflow: Workflow) -> list[str]:
    """The labels a drone needs for this spawn: the spawn's own, else the workflow's `drone_labels`."""
    if labels is None:
        return list(workflow.drone_labels or []) if runtime == "drone" else []
    if runtime != "drone":
        raise ApiError(f"labels only apply to the drone runtime (this spawn runs on {runtime}).", code="invalid",
                       field="labels")
    if not isinstance(labels, list) or not all(isinstance(label, str) and 0 < len(label) <= 100 for label in labels):
        raise ApiError("labels must be a list of non-empty strings (at most 100 characters each).", code="invalid",
                       field="labels")
    return sorted(set(labels))


def execution_spawn(*, principal: Principal, workflow: Workflow, env=None, inputs=None,
                    runtime: str | None = None, labels=None) -> Execution:
    """Spawn the workflow's active version: a pending execution, provisioned by a Celery task.

    No active version → 409 `no_active_version`; an unknown `runtime` → 400,
    one that cannot start it here → 422 (`runtime_for_spawn`). The task is
    enqueued once the row is committed.
    """
    if not principal.sees_tenant(workflow.tenant_id):
        raise NotFound(f"No workflow {workflow.pk}.")
    env = _clean_env(env)
    if inputs in (None, ""):
        inputs = {}
    if not isinstance(inputs, dict):
        raise ApiError("inputs must be a JSON object.", code="invalid", field="inputs")
    runtime = runtime_for_spawn(workflow=workflow, requested=runtime)
    required_labels = _clean_labels(labels, runtime=runtime, workflow=workflow)
    with transaction.atomic():
        version = workflow.versions.select_related("bundle").filter(is_active=True).first()
        if version is None:
            raise Conflict(f"Workflow {workflow} has no active version to run.", code="no_active_version")
        tenant = tenant_lock_for_quota(tenant_id=workflow.tenant_id)
        running = Execution.objects.filter(tenant_id=workflow.tenant_id).exclude(status__in=TERMINAL_STATUSES)
        tenant_quota_check(tenant=tenant, quota=quotas.EXECUTIONS_RUNNING, usage=running.count())
        now = timezone.now()
        execution = Execution.objects.create(
            tenant_id=workflow.tenant_id, workflow=workflow, version=version, runtime=runtime, env=env,
            inputs=inputs, timeout_sec=workflow.timeout_sec, spawned_by=str(principal)[:200],
            required_labels=required_labels,
            deadline_at=now + timedelta(seconds=settings.SWARM_EXECUTION_BOOT_TIMEOUT + workflow.timeout_sec),
        )
        # A canary sends a stable share of execution ids to its candidate (workflows/services/canary.py).
        chosen = canary_pick_version(workflow=workflow, execution_id=execution.pk, primary=version)
        if chosen.pk != version.pk:
            Execution.objects.filter(pk=execution.pk).update(version=chosen)
        canary = chosen.pk != version.pk
        version = chosen
        execution = execution_lock(execution_id=execution.pk)
        execution_events_append(execution=execution, events=[{
            "type": ExecutionEventType.SPAWN_REQUESTED,
            "message": f"{principal} spawned {workflow} {version.version} on the {runtime} runtime"
                       + (" (canary)" if canary else ""),
            "data": {"version": version.version, "bundle_hash": version.bundle.sha256, "runtime": runtime,
                     "env": sorted(env), "canary": canary,
                     **({"required_labels": required_labels} if runtime == "drone" else {})},
        }])
        audit_record(actor=principal, action="execution.spawn", obj=execution, tenant_id=workflow.tenant_id,
                     detail={"workflow": str(workflow), "version": version.version})
        transaction.on_commit(lambda: tasks.provision_execution.delay(execution.pk))
    return execution


def metadata_url() -> str:
    """The metadata endpoint runtimes hand to the boot script."""
    return f"{settings.SWARM_PUBLIC_URL}/api/v1/metadata"


def execution_token_issue(*, execution: Execution) -> str:
    """A new metadata token for the execution (plaintext, shown once), living through its boot and run limits."""
    lifetime = timedelta(seconds=settings.SWARM_EXECUTION_BOOT_TIMEOUT + execution.timeout_sec) + TOKEN_GRACE
    _, token = api_token_issue(
        scope=TokenScope.EXECUTION, name=f"execution-{execution.pk}", tenant=execution.tenant,
        subject_type=EXECUTION_SUBJECT, subject_id=str(execution.pk), expires_at=timezone.now() + lifetime,
    )
    return token


def execution_provision(*, execution_id: int) -> Execution | None:
    """Issue the execution's metadata token and start its runtime (idempotent: only from `pending`).

    A runtime whose executions are claimed later by a worker of its own (the
    drone runtime: `claims_later`) queues it instead; the claim issues the token.
    """
    with transaction.atomic():
        execution = execution_lock(execution_id=execution_id)
        if execution.status != ExecutionStatus.PENDING:
            return None
        try:
            runtime = get_runtime(execution.runtime)
        except KeyError:
            runtime = None
        if runtime is not None and runtime.claims_later:
            runtime.enqueue(execution)
            return execution
        execution_move_to(execution=execution, status=ExecutionStatus.PROVISIONING)
        execution_status_save(execution=execution)
        token = execution_token_issue(execution=execution)
    try:
        state = get_runtime(execution.runtime).start(execution, metadata_url(), token)
    except (RuntimeStartFailed, KeyError) as exc:
        return execution_fail(execution_id=execution_id, reason=f"the {execution.runtime} runtime could not "
                                                                f"start: {exc}")
    with transaction.atomic():
        execution = execution_lock(execution_id=execution_id)
        execution.runtime_state = state
        execution.save(update_fields=["runtime_state"])
        execution_events_append(execution=execution, events=[{
            "type": ExecutionEventType.RUNTIME_STARTED,
            "message": f"{execution.runtime} runtime started the boot"
                       + (f" (sandbox: {state['sandbox']})" if state.get("sandbox") else "")
                       + (f" (accelerator: {state['accelerator']})" if state.get("accelerator") else ""),
            "data": {key: state[key] for key in ("sandbox", "network", "host", "supervisor_pid", "accelerator",
                                                 "image", "memory_mb", "cpus") if key in state},
        }])
    return execution


def execution_fail(*, execution_id: int, reason: str, data: dict | None = None) -> Execution:
    """Mark a live execution failed with an `error` event (no-op once terminal)."""
    with transaction.atomic():
        execution = execution_lock(execution_id=execution_id)
        if execution_move_to(execution=execution, status=ExecutionStatus.FAILED):
            execution_status_save(execution=execution)
            execution_events_append(execution=execution, events=[
                {"type": ExecutionEventType.ERROR, "message": reason, "data": data or {}}])
    return execution


def execution_cancel(*, principal: Principal | str, execution: Execution) -> Execution:
    """Cancel a live execution: status cancelled, token dead, runtime told to kill it (409 when ended)."""
    with transaction.atomic():
        execution = execution_lock(execution_id=execution.pk)
        if execution.is_finished:
            raise Conflict(f"Execution {execution.pk} has already ended ({execution.status}).",
                           code="execution_finished")
        execution_events_append(execution=execution, events=[{"type": ExecutionEventType.CANCEL_REQUESTED,
                                                              "message": f"cancel requested by {principal}"}])
        execution_move_to(execution=execution, status=ExecutionStatus.CANCELLED)
        execution_status_save(execution=execution)
        audit_record(actor=principal, action="execution.cancel", obj=execution, tenant_id=execution.tenant_id)
        _stop_runtime_on_commit(execution.pk)
    return execution


def _stop_runtime_on_commit(execution_id: int) -> None:
    transaction.on_commit(lambda: tasks.stop_execution_runtime.delay(execution_id))


def execution_stop_runtime(*, execution_id: int) -> None:
    """Tell the runtime to kill whatever still runs for an execution."""
    execution = Execution.objects.get(pk=execution_id)
    try:
        runtime = get_runtime(execution.runtime)
    except KeyError:
        logger.error("execution %s: unknown runtime %r, nothing to stop", execution_id, execution.runtime)
        return
    runtime.cancel(execution)


def execution_time_out(*, execution_id: int) -> bool:
    """Mark an overdue live execution timed_out and have its runtime killed; False when not overdue."""
    with transaction.atomic():
        execution = Execution.objects.select_for_update(skip_locked=True).filter(pk=execution_id).first()
        if execution is None or execution.is_finished or execution.deadline_at is None:
            return False
        if execution.deadline_at > timezone.now():
            return False
        limit = "boot + run" if execution.started_at is None else "run"
        message = f"the execution exceeded its {limit} time limit (timeout_sec={execution.timeout_sec})"
        data = {"timeout_sec": execution.timeout_sec}
        if execution.status == ExecutionStatus.QUEUED:
            waiting = (execution.runtime_state or {}).get("waiting") or {}
            message += f" while queued for a drone: {waiting.get('reason', 'no drone claimed it')}"
            data["waiting"] = waiting
        execution_events_append(execution=execution, events=[{
            "type": ExecutionEventType.TIMED_OUT, "message": message, "data": data}])
        execution_move_to(execution=execution, status=ExecutionStatus.TIMED_OUT)
        execution_status_save(execution=execution)
        _stop_runtime_on_commit(execution.pk)
    return True


def executions_reap() -> dict:
    """Beat's sweep: time out overdue executions and fail those whose boot vanished."""
    timed_out = 0
    for execution_id in Execution.objects.live().filter(deadline_at__lte=timezone.now()).values_list("pk", flat=True):
        timed_out += execution_time_out(execution_id=execution_id)
    lost = 0
    for execution in Execution.objects.live().exclude(runtime_state={}):
        try:
            alive = get_runtime(execution.runtime).is_alive(execution)
        except KeyError:
            continue
        if alive is False:
            execution = Execution.objects.get(pk=execution.pk)
            if not execution.is_finished:
                execution_fail(execution_id=execution.pk,
                               reason="the runtime's supervisor is gone without reporting how the execution ended")
                lost += 1
    swept = {}
    for name in runtime_names():
        swept.update(get_runtime(name).sweep())
    return {"timed_out": timed_out, "lost": lost, **swept}
