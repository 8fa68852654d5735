"""Workflow canaries: a weighted traffic split between the active version and a candidate.

The same care as payload rollouts, for tenants' workflow versions: spawns
pick the candidate for `weight` percent of execution ids (a hash of the
canary and the execution id, so a given execution always gets the same
answer), and every finished candidate execution re-judges the canary under
its row lock: a failure rate above the threshold (once `min_executions`
have finished) reverts the split; with `auto_promote`, a rate at or below
it makes the candidate the active version.
"""
from __future__ import annotations

import hashlib

from django.db import transaction
from django.utils import timezone

from swarm.core.errors import ApiError, Conflict, NotFound
from swarm.core.principals import Principal
from swarm.core.services import audit_record
from workflows import tasks
from workflows.choices import ExecutionStatus
from workflows.models import CanaryState, Execution, Workflow, WorkflowCanary, WorkflowVersion
from workflows.services.registry import _activate

FAILED_STATUSES = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)
JUDGED_STATUSES = (ExecutionStatus.SUCCEEDED, *FAILED_STATUSES)


def canary_bucket(*, canary_id: int, execution_id: int) -> int:
    """0–9999, stable for one canary and execution id: the candidate runs when it is below weight × 100."""
    digest = hashlib.sha256(f"canary:{canary_id}:execution:{execution_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def canary_active(*, workflow: Workflow) -> WorkflowCanary | None:
    return (WorkflowCanary.objects.select_related("candidate__bundle", "primary")
            .filter(workflow=workflow, state=CanaryState.ACTIVE).first())


def canary_pick_version(*, workflow: Workflow, execution_id: int, primary: WorkflowVersion) -> WorkflowVersion:
    """The version an execution runs: the candidate for its share of ids while a canary is active."""
    canary = canary_active(workflow=workflow)
    if canary is None or canary.primary_id != primary.pk:
        return primary
    if canary_bucket(canary_id=canary.pk, execution_id=execution_id) < canary.weight * 100:
        return canary.candidate
    return primary


def workflow_canary_start(*, principal: Principal, workflow: Workflow, version: WorkflowVersion, weight: int,
                          auto_promote: bool = False, failure_rate_threshold: float = 0.1,
                          min_executions: int = 10) -> WorkflowCanary:
    """Split the workflow's spawns: `weight` percent to `version`, the rest to the active version."""
    if version.workflow_id != workflow.pk:
        raise NotFound(f"Workflow {workflow.pk} has no version {version.pk}.", field="version_id")
    if not 1 <= int(weight) <= 99:
        raise ApiError("weight is a percentage between 1 and 99.", code="invalid", field="weight")
    if not 0 <= float(failure_rate_threshold) <= 1:
        raise ApiError("failure_rate_threshold is between 0 and 1.", code="invalid", field="failure_rate_threshold")
    with transaction.atomic():
        Workflow.objects.select_for_update().get(pk=workflow.pk)
        primary = workflow.versions.filter(is_active=True).first()
        if primary is None:
            raise Conflict(f"Workflow {workflow} has no active version to split with.", code="no_active_version")
        if primary.pk == version.pk:
            raise Conflict(f"Version {version.version} is already the active one.", code="already_active",
                           field="version_id")
        existing = canary_active(workflow=workflow)
        if existing is not None:
            raise Conflict(f"Workflow {workflow} already has an active canary ({existing.candidate.version} at "
                           f"{existing.weight}%); promote or revert it first.", code="canary_exists")
        canary = WorkflowCanary.objects.create(
            workflow=workflow, candidate=version, primary=primary, weight=int(weight), auto_promote=auto_promote,
            failure_rate_threshold=float(failure_rate_threshold), min_executions=int(min_executions),
            created_by=str(principal))
        audit_record(actor=principal, action="workflow.canary_start", obj=canary, tenant_id=workflow.tenant_id,
                     detail={"candidate": version.version, "primary": primary.version, "weight": canary.weight})
    return canary


def _finish(canary: WorkflowCanary, *, state: str, reason: str, actor) -> WorkflowCanary:
    canary.state, canary.reason, canary.finished_at = state, reason[:300], timezone.now()
    canary.save(update_fields=["state", "reason", "finished_at"])
    if state == CanaryState.PROMOTED:
        _activate(workflow=canary.workflow, version=canary.candidate, actor=actor, reason="activate")
    audit_record(actor=actor, action=f"workflow.canary_{state}", obj=canary, tenant_id=canary.workflow.tenant_id,
                 detail={"candidate": canary.candidate.version, "reason": reason})
    return canary


def _locked_active(workflow: Workflow) -> WorkflowCanary:
    Workflow.objects.select_for_update().get(pk=workflow.pk)
    canary = canary_active(workflow=workflow)
    if canary is None:
        raise Conflict(f"Workflow {workflow} has no active canary.", code="no_active_canary")
    return canary


def workflow_canary_promote(*, principal: Principal, workflow: Workflow) -> WorkflowCanary:
    """Make the candidate the active version and end the split."""
    with transaction.atomic():
        return _finish(_locked_active(workflow), state=CanaryState.PROMOTED, reason="promoted by an operator",
                       actor=principal)


def workflow_canary_revert(*, principal: Principal, workflow: Workflow) -> WorkflowCanary:
    """End the split; every spawn runs the active version again."""
    with transaction.atomic():
        return _finish(_locked_active(workflow), state=CanaryState.REVERTED, reason="reverted by an operator",
                       actor=principal)


def canary_failure_rate(*, canary: WorkflowCanary) -> tuple[int, int]:
    """(finished candidate executions judged, of which failed) since the canary started."""
    runs = Execution.objects.filter(workflow_id=canary.workflow_id, version_id=canary.candidate_id,
                                    created_at__gte=canary.created_at, status__in=JUDGED_STATUSES)
    return runs.count(), runs.filter(status__in=FAILED_STATUSES).count()


def workflow_canary_evaluate(*, workflow_id: int) -> WorkflowCanary | None:
    """Judge the active canary on its candidate's finished executions (a task, after each one)."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().filter(pk=workflow_id).first()
        canary = canary_active(workflow=workflow) if workflow else None
        if canary is None:
            return None
        finished, failed = canary_failure_rate(canary=canary)
        if finished < canary.min_executions:
            return canary
        rate = failed / finished
        if rate > canary.failure_rate_threshold:
            return _finish(canary, state=CanaryState.REVERTED, actor="canary",
                           reason=f"failure rate {rate:.0%} ({failed}/{finished}) over the threshold "
                                  f"{canary.failure_rate_threshold:.0%}")
        if canary.auto_promote:
            return _finish(canary, state=CanaryState.PROMOTED, actor="canary",
                           reason=f"failure rate {rate:.0%} ({failed}/{finished}) within the threshold")
        return canary


def canary_note_finished(*, execution: Execution) -> None:
    """A candidate execution finished: judge its canary after commit (called where executions end)."""
    if WorkflowCanary.objects.filter(workflow_id=execution.workflow_id, candidate_id=execution.version_id,
                                     state=CanaryState.ACTIVE).exists():
        workflow_id = execution.workflow_id
        transaction.on_commit(lambda: tasks.evaluate_canary.delay(workflow_id))
