"""Template tags for the admin index: a one-glance overview of the registry, its tokens and the executions."""
from datetime import timedelta

from django import template
from django.db.models import Count, Sum
from django.utils import timezone

from bundles.models import Bundle
from swarm.core.models import ApiToken
from tenancy.models import Tenant
from workflows.choices import ExecutionStatus
from workflows.models import ActiveWorkflowVersion, Execution, Workflow, WorkflowActivation, WorkflowVersion

register = template.Library()


@register.simple_tag
def registry_overview() -> dict:
    """Counts an operator wants first: tenants, workflows, versions, storage, live tokens, recent activations."""
    stored = Bundle.objects.aggregate(total=Sum("size"))["total"] or 0
    return {
        "tenants": Tenant.objects.count(),
        "workflows": Workflow.objects.count(),
        "active_workflows": ActiveWorkflowVersion.objects.count(),
        "versions": WorkflowVersion.objects.count(),
        "bundles": Bundle.objects.count(),
        "bundle_bytes": stored,
        "live_tokens": ApiToken.objects.usable().count(),
        "recent_activations": list(
            WorkflowActivation.objects.select_related("workflow__tenant", "version", "previous_version")[:5]
        ),
        "now": timezone.now(),
    }


@register.inclusion_tag("admin/executions_summary.html")
def executions_summary(hours: int = 24) -> dict:
    """Executions created in the last `hours`, by status (every status shown, zeros too)."""
    since = timezone.now() - timedelta(hours=hours)
    counts = dict(Execution.objects.filter(created_at__gte=since).values_list("status").annotate(n=Count("id")))
    return {"hours": hours, "total": sum(counts.values()),
            "statuses": [{"status": value, "label": label, "count": counts.get(value, 0)}
                         for value, label in ExecutionStatus.choices]}
