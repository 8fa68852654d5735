"""Reads of the workflow registry, always scoped to the caller's tenant (tenancy.scope)."""
from django.db.models import OuterRef, QuerySet, Subquery

from bundles.downloads import bundle_download_url
from swarm.core.errors import NotFound
from swarm.core.principals import Principal
from tenancy.models import Tenant
from workflows.models import Workflow, WorkflowVersion


def workflow_rows() -> QuerySet[Workflow]:
    """Workflows with their tenant and active version label in the same query (not yet scoped)."""
    active_label = WorkflowVersion.objects.filter(workflow=OuterRef("pk"), is_active=True).values("version")[:1]
    return Workflow.objects.select_related("tenant").annotate(active_version_label=Subquery(active_label))


def workflow_queryset(principal: Principal | None) -> QuerySet[Workflow]:
    """Workflows the principal may see, with their tenant and active version label in the same query."""
    return workflow_rows().visible_to(principal)


def workflow_list(principal: Principal, *, tenant: Tenant) -> QuerySet[Workflow]:
    """A tenant's workflows, as far as the principal may see them."""
    return workflow_queryset(principal).filter(tenant=tenant)


def workflow_get(principal: Principal, workflow_id: int) -> Workflow:
    """A visible workflow by id, else a 404."""
    workflow = workflow_queryset(principal).filter(pk=workflow_id).first()
    if workflow is None:
        raise NotFound(f"No workflow {workflow_id}.")
    return workflow


def workflow_get_by_slug(principal: Principal, *, tenant_slug: str, workflow_slug: str) -> Workflow:
    """A visible workflow by `tenant/workflow` slugs, else a 404."""
    workflow = workflow_queryset(principal).filter(tenant__slug=tenant_slug, slug=workflow_slug).first()
    if workflow is None:
        raise NotFound(f"No workflow {tenant_slug}/{workflow_slug}.")
    return workflow


def version_list(workflow: Workflow) -> QuerySet[WorkflowVersion]:
    """A workflow's versions, newest first, with their bundles."""
    return workflow.versions.select_related("bundle").order_by("-created_at", "-id")


def version_get(workflow: Workflow, version_id: int) -> WorkflowVersion:
    """One version of a workflow by id; any other id (another tenant's, another workflow's) is a 404."""
    version = version_list(workflow).filter(pk=version_id).first()
    if version is None:
        raise NotFound(f"Workflow {workflow.pk} has no version {version_id}.")
    return version


def active_version(workflow: Workflow) -> WorkflowVersion | None:
    """The workflow's active version, or None."""
    return version_list(workflow).filter(is_active=True).first()


def active_version_describe(workflow: Workflow) -> dict:
    """What a runtime needs to boot the active version: URL, hash and limits."""
    version = active_version(workflow)
    if version is None:
        raise NotFound(f"Workflow {workflow} has no active version.", code="no_active_version")
    return {
        "workflow_id": workflow.pk,
        "version_id": version.pk,
        "version": version.version,
        "bundle_url": bundle_download_url(version.bundle),
        "bundle_hash": version.bundle.sha256,
        "runtime": workflow.runtime,
        "entrypoint": workflow.entrypoint,
        "memory_mb": workflow.memory_mb,
        "timeout_sec": workflow.timeout_sec,
        "deployed_at": version.activated_at,
        "canary": canary_split(workflow),
    }


def canary_split(workflow: Workflow) -> dict | None:
    """The traffic split `/active` names next to the primary: candidate, weight, how it is judged."""
    from workflows.models import CanaryState, WorkflowCanary

    canary = (WorkflowCanary.objects.select_related("candidate__bundle")
              .filter(workflow=workflow, state=CanaryState.ACTIVE).first())
    if canary is None:
        return None
    return {"id": canary.pk, "version_id": canary.candidate_id, "version": canary.candidate.version,
            "bundle_hash": canary.candidate.bundle.sha256, "weight": canary.weight,
            "auto_promote": canary.auto_promote, "failure_rate_threshold": canary.failure_rate_threshold,
            "min_executions": canary.min_executions}
