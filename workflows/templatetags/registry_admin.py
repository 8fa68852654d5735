"""Template tags for the admin index: a one-glance overview of the registry and its tokens."""
from django import template
from django.db.models import Sum
from django.utils import timezone

from bundles.models import Bundle
from swarm.core.models import ApiToken
from tenancy.models import Tenant
from workflows.models import ActiveWorkflowVersion, Workflow, WorkflowActivation, WorkflowVersion

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
