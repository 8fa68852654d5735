"""Writes of executions: spawn, provision, boot reports, cancel, timeouts, tenant secrets.

The API views, the admin actions, the Celery tasks and the metadata service
all call these functions; each takes keyword arguments and does one use case.
Every state change appends an `ExecutionEvent` under the execution's row lock,
which also numbers the events (`seq`) without gaps.
"""
from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from bundles.downloads import bundle_download_url
from swarm.core.choices import TokenScope
from swarm.core.errors import ApiError, Conflict, NotFound
from swarm.core.principals import Principal
from swarm.core.services import api_token_issue, api_tokens_revoke_for_subject, audit_record
from workflows.choices import (
    BOOT_REPORTED_EVENTS,
    STATUS_ORDER,
    TERMINAL_STATUSES,
    ExecutionEventType,
    ExecutionStatus,
    OutputStream,
)
from workflows.models import Execution, ExecutionEvent, Tenant, TenantSecret, Workflow
from workflows.runtime_services import runtime_for_spawn
from workflows.runtimes import RuntimeStartFailed, get_runtime
from workflows.secret_box import decrypt_secret, encrypt_secret, reencrypt_secret

logger = logging.getLogger(__name__)

EXECUTION_SUBJECT = "execution"
SECRET_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_PATTERN = SECRET_NAME_PATTERN
SECRET_MASK = "********"
MAX_EVENTS_PER_REPORT = 1000
MAX_MESSAGE_CHARS = 16 * 1024
# Extra life of a metadata token beyond the execution's own limits.
TOKEN_GRACE = timedelta(seconds=60)


# --- Tenant secrets -----------------------------------------------------------


def _check_secret_workflows(tenant: Tenant, workflows) -> list[Workflow]:
    workflows = list(workflows or [])
    foreign = [w for w in workflows if w.tenant_id != tenant.pk]
    if foreign:
        raise ApiError(f"Workflow {foreign[0]} belongs to another tenant.", code="invalid", field="workflows")
    return workflows


def tenant_secret_set(
    *, tenant: Tenant, name: str, value: str | None, workflows=None, actor: Principal | str = "system"
) -> TenantSecret:
    """Create or update a tenant secret; `value=None` keeps the stored value (write-only field left empty)."""
    if not SECRET_NAME_PATTERN.match(name or ""):
        raise ApiError("A secret name is an environment variable name (letters, digits, _).", code="invalid",
                       field="name")
    workflows = _check_secret_workflows(tenant, workflows) if workflows is not None else None
    with transaction.atomic():
        secret = TenantSecret.objects.select_for_update().filter(tenant=tenant, name=name).first()
        if secret is None:
            if not value:
                raise ApiError("A new secret needs a value.", code="missing_field", field="value")
            try:
                secret = TenantSecret.objects.create(tenant=tenant, name=name, ciphertext=encrypt_secret(value))
            except IntegrityError:
                raise Conflict(f"Secret {name} already exists.", code="secret_exists", field="name") from None
        elif value:
            secret.ciphertext = encrypt_secret(value)
            secret.save(update_fields=["ciphertext", "updated_at"])
        if workflows is not None:
            secret.workflows.set(workflows)
        # The audit log names the secret, never its value.
        audit_record(actor=actor, action="secret.set", obj=secret, tenant_id=tenant.pk,
                     detail={"name": name, "value_changed": bool(value)})
    return secret


def tenant_secrets_rotate() -> int:
    """Re-encrypt every tenant secret with the first key of SWARM_SECRETS_KEYS; returns the count."""
    count = 0
    with transaction.atomic():
        for secret in TenantSecret.objects.select_for_update().order_by("pk"):
            rotated = reencrypt_secret(secret.ciphertext)
            TenantSecret.objects.filter(pk=secret.pk).update(ciphertext=rotated)
            count += 1
    return count


def secrets_for_workflow(workflow: Workflow) -> dict[str, str]:
    """Plaintext secrets attached to a workflow (only the metadata service and masking use this)."""
    return {secret.name: decrypt_secret(secret.ciphertext)
            for secret in TenantSecret.objects.filter(tenant_id=workflow.tenant_id, workflows=workflow)}


def mask_secrets(text: str, secret_values) -> str:
    """`text` with every secret value replaced by a mask (longest values first)."""
    for value in sorted((v for v in secret_values if v), key=len, reverse=True):
        if value in text:
            text = text.replace(value, SECRET_MASK)
    return text


def _mask_data(data, secret_values):
    if isinstance(data, str):
        return mask_secrets(data, secret_values)
    if isinstance(data, dict):
        return {key: _mask_data(value, secret_values) for key, value in data.items()}
    if isinstance(data, list):
        return [_mask_data(value, secret_values) for value in data]
    return data


# --- Events and transitions ---------------------------------------------------


def _append_events(execution: Execution, events: list[dict], *, secret_values=()) -> list[ExecutionEvent]:
    """Append events to a row-locked execution, masking secrets in every stored string."""
    rows = []
    for event in events:
        execution.last_seq += 1
        rows.append(ExecutionEvent(
            execution=execution, seq=execution.last_seq, type=event["type"], stream=event.get("stream", ""),
            message=mask_secrets(event.get("message", ""), secret_values)[:MAX_MESSAGE_CHARS],
            data=_mask_data(event.get("data") or {}, secret_values),
        ))
    ExecutionEvent.objects.bulk_create(rows)
    Execution.objects.filter(pk=execution.pk).update(last_seq=execution.last_seq)
    return rows


def _move_to(execution: Execution, status: str) -> bool:
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
    return True


def _save_status(execution: Execution) -> None:
    execution.save(update_fields=["status", "exit_code", "started_at", "finished_at", "deadline_at",
                                  "runtime_state"])


def _locked(execution_id: int) -> Execution:
    """The execution, row-locked (only its own row: the workflow joined in stays unlocked)."""
    return Execution.objects.select_for_update(of=("self",)).select_related("workflow").get(pk=execution_id)


# --- Spawn and provision ------------------------------------------------------


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


def execution_spawn(*, principal: Principal, workflow: Workflow, env=None, inputs=None,
                    runtime: str | None = None) -> Execution:
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
    with transaction.atomic():
        version = workflow.versions.select_related("bundle").filter(is_active=True).first()
        if version is None:
            raise Conflict(f"Workflow {workflow} has no active version to run.", code="no_active_version")
        now = timezone.now()
        execution = Execution.objects.create(
            tenant_id=workflow.tenant_id, workflow=workflow, version=version, runtime=runtime, env=env,
            inputs=inputs, timeout_sec=workflow.timeout_sec, spawned_by=str(principal)[:200],
            deadline_at=now + timedelta(seconds=settings.SWARM_EXECUTION_BOOT_TIMEOUT + workflow.timeout_sec),
        )
        execution = _locked(execution.pk)
        _append_events(execution, [{
            "type": ExecutionEventType.SPAWN_REQUESTED,
            "message": f"{principal} spawned {workflow} {version.version} on the {runtime} runtime",
            "data": {"version": version.version, "bundle_hash": version.bundle.sha256, "runtime": runtime,
                     "env": sorted(env)},
        }])
        audit_record(actor=principal, action="execution.spawn", obj=execution, tenant_id=workflow.tenant_id,
                     detail={"workflow": str(workflow), "version": version.version})
        from workflows.tasks import provision_execution

        transaction.on_commit(lambda: provision_execution.delay(execution.pk))
    return execution


def metadata_url() -> str:
    """The metadata endpoint runtimes hand to the boot script."""
    return f"{settings.SWARM_PUBLIC_URL}/api/v1/metadata"


def execution_provision(*, execution_id: int) -> Execution | None:
    """Issue the execution's metadata token and start its runtime (idempotent: only from `pending`)."""
    with transaction.atomic():
        execution = _locked(execution_id)
        if execution.status != ExecutionStatus.PENDING:
            return None
        _move_to(execution, ExecutionStatus.PROVISIONING)
        _save_status(execution)
        lifetime = timedelta(seconds=settings.SWARM_EXECUTION_BOOT_TIMEOUT + execution.timeout_sec) + TOKEN_GRACE
        _, token = api_token_issue(
            scope=TokenScope.EXECUTION, name=f"execution-{execution.pk}", tenant=execution.tenant,
            subject_type=EXECUTION_SUBJECT, subject_id=str(execution.pk), expires_at=timezone.now() + lifetime,
        )
    try:
        state = get_runtime(execution.runtime).start(execution, metadata_url(), token)
    except (RuntimeStartFailed, KeyError) as exc:
        return execution_fail(execution_id=execution_id, reason=f"the {execution.runtime} runtime could not "
                                                                f"start: {exc}")
    with transaction.atomic():
        execution = _locked(execution_id)
        execution.runtime_state = state
        execution.save(update_fields=["runtime_state"])
        _append_events(execution, [{
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
        execution = _locked(execution_id)
        if _move_to(execution, ExecutionStatus.FAILED):
            _save_status(execution)
            _append_events(execution, [{"type": ExecutionEventType.ERROR, "message": reason, "data": data or {}}])
    return execution


# --- The boot script's side (metadata token) -----------------------------------


def execution_metadata_serve(*, execution: Execution, remote_addr: str = "") -> dict:
    """What the boot script needs, including decrypted secrets; records `metadata_served`."""
    with transaction.atomic():
        execution = _locked(execution.pk)
        if execution.is_finished:
            raise Conflict("The execution has ended.", code="execution_finished")
        workflow = execution.workflow
        secrets = secrets_for_workflow(workflow)
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
        if _move_to(execution, ExecutionStatus.BOOTING):
            _save_status(execution)
        _append_events(execution, [{
            "type": ExecutionEventType.METADATA_SERVED,
            "message": f"metadata served to {remote_addr or 'the boot script'}",
            "data": {"secrets": sorted(secrets), "bundle_hash": version.bundle.sha256},
        }])
    return body


def _clean_report(raw_events) -> list[dict]:
    """Validate a batch reported by the boot script (400 naming the first bad event)."""
    if not isinstance(raw_events, list) or not raw_events:
        raise ApiError("events must be a non-empty list.", code="invalid", field="events")
    if len(raw_events) > MAX_EVENTS_PER_REPORT:
        raise ApiError(f"At most {MAX_EVENTS_PER_REPORT} events per report.", code="invalid", field="events")
    cleaned = []
    for index, event in enumerate(raw_events):
        if not isinstance(event, dict):
            raise ApiError(f"events[{index}] must be an object.", code="invalid", field="events")
        event_type = event.get("type")
        if event_type not in BOOT_REPORTED_EVENTS:
            raise ApiError(f"events[{index}].type {event_type!r} is not one the boot script may report.",
                           code="invalid_event_type", field="events")
        stream = event.get("stream") or ""
        if stream not in ("", *OutputStream.values):
            raise ApiError(f"events[{index}].stream must be stdout or stderr.", code="invalid", field="events")
        message = event.get("message") or ""
        data = event.get("data") or {}
        if not isinstance(message, str) or not isinstance(data, dict):
            raise ApiError(f"events[{index}]: message is a string and data an object.", code="invalid",
                           field="events")
        if event_type == ExecutionEventType.EXITED and not isinstance(data.get("exit_code"), int):
            raise ApiError(f"events[{index}]: an exited event carries data.exit_code (an integer).",
                           code="invalid", field="events")
        cleaned.append({"type": event_type, "stream": stream, "message": message, "data": data})
    return cleaned


def execution_report(*, execution: Execution, events, first: int | None = None) -> Execution:
    """Record events reported by the boot script and apply the status they imply.

    Any boot event → booting; `started` → running (the timeout clock starts);
    `exited` → succeeded (exit code 0) or failed; `error` → failed. A
    terminal execution accepts nothing more (409 `execution_finished`).
    `first` (the index of the batch's first event among all the boot has
    reported) makes a retried batch idempotent: events already stored are
    skipped.
    """
    cleaned = _clean_report(events)
    if first is not None and (not isinstance(first, int) or isinstance(first, bool) or first < 0):
        raise ApiError("first must be a non-negative integer.", code="invalid", field="first")
    with transaction.atomic():
        execution = _locked(execution.pk)
        if execution.is_finished:
            raise Conflict(f"Execution {execution.pk} has ended ({execution.status}).", code="execution_finished")
        if first is not None:
            cleaned = cleaned[max(0, execution.boot_reported - first):]
            execution.boot_reported = max(execution.boot_reported, first + len(events))
            Execution.objects.filter(pk=execution.pk).update(boot_reported=execution.boot_reported)
        secret_values = secrets_for_workflow(execution.workflow).values()
        if cleaned:
            _append_events(execution, cleaned, secret_values=secret_values)
        for event in cleaned:
            event_type = event["type"]
            if event_type == ExecutionEventType.STARTED:
                if _move_to(execution, ExecutionStatus.RUNNING):
                    execution.started_at = timezone.now()
                    execution.deadline_at = execution.started_at + timedelta(seconds=execution.timeout_sec)
            elif event_type == ExecutionEventType.EXITED:
                code = event["data"]["exit_code"]
                outcome = ExecutionStatus.SUCCEEDED if code == 0 else ExecutionStatus.FAILED
                if event["data"].get("timed_out") is True:
                    outcome = ExecutionStatus.TIMED_OUT
                if _move_to(execution, outcome):
                    execution.exit_code = code
            elif event_type == ExecutionEventType.ERROR:
                _move_to(execution, ExecutionStatus.FAILED)
            else:
                _move_to(execution, ExecutionStatus.BOOTING)
        _save_status(execution)
    return execution


# --- Cancel and timeouts ---------------------------------------------------------


def execution_cancel(*, principal: Principal | str, execution: Execution) -> Execution:
    """Cancel a live execution: status cancelled, token dead, runtime told to kill it (409 when ended)."""
    with transaction.atomic():
        execution = _locked(execution.pk)
        if execution.is_finished:
            raise Conflict(f"Execution {execution.pk} has already ended ({execution.status}).",
                           code="execution_finished")
        _append_events(execution, [{"type": ExecutionEventType.CANCEL_REQUESTED,
                                    "message": f"cancel requested by {principal}"}])
        _move_to(execution, ExecutionStatus.CANCELLED)
        _save_status(execution)
        audit_record(actor=principal, action="execution.cancel", obj=execution, tenant_id=execution.tenant_id)
        _stop_runtime_on_commit(execution.pk)
    return execution


def _stop_runtime_on_commit(execution_id: int) -> None:
    from workflows.tasks import stop_execution_runtime

    transaction.on_commit(lambda: stop_execution_runtime.delay(execution_id))


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
        _append_events(execution, [{
            "type": ExecutionEventType.TIMED_OUT,
            "message": f"the execution exceeded its {limit} time limit (timeout_sec={execution.timeout_sec})",
            "data": {"timeout_sec": execution.timeout_sec},
        }])
        _move_to(execution, ExecutionStatus.TIMED_OUT)
        _save_status(execution)
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
    return {"timed_out": timed_out, "lost": lost}
