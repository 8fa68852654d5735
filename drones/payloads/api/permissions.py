"""Who may change fleet-wide payloads: admin tokens, and engine tokens bound to no tenant."""
from rest_framework.permissions import SAFE_METHODS, BasePermission

from swarm.core.choices import TokenScope
from swarm.core.permissions import request_principal


class FleetWrite(BasePermission):
    """Reads: admin, engine, read (HasScope). Writes: admin, or an engine token not bound to a tenant.

    Payloads, releases and rollouts act on every tenant's drones, so a
    tenant-bound engine token may read them but never change them (403).
    """

    message = "Payloads are fleet-wide: changing them needs an admin token or an engine token bound to no tenant."

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS and getattr(view, "action", None) not in getattr(view, "write_actions", ()):
            return True
        principal = request_principal(request)
        if principal is None:
            return False
        return principal.scope == TokenScope.ADMIN or (principal.scope == TokenScope.ENGINE
                                                       and principal.tenant_id is None)
