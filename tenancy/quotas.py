"""Per-tenant quotas: what a tenant may hold at once, refused with a 429 naming the quota, never dropped.

Each quota has a default in settings (`SWARM_QUOTA_<NAME>`, 0 = unlimited)
and an optional override on the tenant row (`Tenant.quota_<name>`). The
apps that create the counted rows measure the usage — this module knows no
model above tenancy — and call `tenant_quota_check()` inside the creating
transaction, after `tenant_lock_for_quota()`, so two concurrent requests of
one tenant cannot both take the last unit.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from swarm.core.errors import ApiError
from tenancy.models import Tenant


@dataclass(frozen=True)
class Quota:
    """One quota: its name (in errors and docs), the tenant field and setting that set it, and its unit."""

    name: str
    unit: str
    advice: str

    @property
    def field(self) -> str:
        return f"quota_{self.name}"

    @property
    def setting(self) -> str:
        return f"SWARM_QUOTA_{self.name.upper()}"


BUNDLES = Quota("bundles", "workflow versions stored", "delete old workflows' versions")
BUNDLE_BYTES = Quota("bundle_bytes", "bytes of bundles stored", "delete old workflows' versions")
EXECUTIONS_RUNNING = Quota("executions_running", "executions not yet finished",
                           "wait for one to finish or cancel one")
BUILDS_QUEUED = Quota("builds_queued", "builds waiting for a drone", "wait for the queue to drain or cancel a build")
QUOTAS = (BUNDLES, BUNDLE_BYTES, EXECUTIONS_RUNNING, BUILDS_QUEUED)


class QuotaExceeded(ApiError):
    """429 `quota_exceeded`: the request would take a tenant past one of its quotas."""

    status_code = 429
    code = "quota_exceeded"


def tenant_quota_limit(*, tenant: Tenant, quota: Quota) -> int:
    """The quota's value for this tenant: its override, else the setting; 0 means unlimited."""
    override = getattr(tenant, quota.field)
    return int(override if override is not None else getattr(settings, quota.setting))


def tenant_lock_for_quota(*, tenant_id: int) -> Tenant:
    """Lock the tenant row for the rest of the transaction (serialises quota checks of one tenant)."""
    return Tenant.objects.select_for_update().get(pk=tenant_id)


def tenant_quota_check(*, tenant: Tenant, quota: Quota, usage: int, adding: int = 1) -> None:
    """Refuse with a 429 when `usage + adding` would pass the tenant's quota (call under the tenant lock)."""
    limit = tenant_quota_limit(tenant=tenant, quota=quota)
    if limit and usage + adding > limit:
        source = f"Tenant.{quota.field}" if getattr(tenant, quota.field) is not None else quota.setting
        raise QuotaExceeded(
            f"Tenant {tenant.slug!r} is at its {quota.name} quota: {usage} of {limit} {quota.unit}"
            f"{f', and this needs {adding} more' if adding != 1 else ''}. To go on, {quota.advice}, "
            f"or raise the quota ({source}).",
            extra={"quota": quota.name, "limit": limit, "usage": usage},
        )
