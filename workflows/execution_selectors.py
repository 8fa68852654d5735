"""Reads of executions and tenant secrets, always scoped to the caller's tenant (tenancy.scope)."""
from django.db.models import QuerySet

from swarm.core.errors import NotFound
from swarm.core.principals import Principal
from workflows.models import Execution, ExecutionEvent, TenantSecret

EVENT_PAGE_LIMIT = 1000


def execution_rows() -> QuerySet[Execution]:
    """Executions with what their serializer shows (not yet scoped)."""
    return Execution.objects.select_related("workflow", "tenant", "version", "drone")


def execution_queryset(principal: Principal | None) -> QuerySet[Execution]:
    """Executions the principal may see."""
    return execution_rows().visible_to(principal)


def execution_get(principal: Principal, execution_id: int) -> Execution:
    """A visible execution by id; another tenant's is a 404."""
    execution = execution_queryset(principal).filter(pk=execution_id).first()
    if execution is None:
        raise NotFound(f"No execution {execution_id}.")
    return execution


def execution_events_after(execution: Execution, *, after: int = 0, limit: int = EVENT_PAGE_LIMIT
                           ) -> QuerySet[ExecutionEvent]:
    """Events of an execution with `seq > after`, oldest first (for tailing)."""
    return execution.events.filter(seq__gt=after).order_by("seq")[:limit]


def tenant_secret_list(principal: Principal) -> QuerySet[TenantSecret]:
    """Secret names visible to the principal (values are never read here)."""
    return TenantSecret.objects.visible_to(principal).select_related("tenant").prefetch_related("workflows")
