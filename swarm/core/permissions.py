"""Scope checks: each view names the scopes it accepts for reads and writes."""
from rest_framework.permissions import SAFE_METHODS, BasePermission

from swarm.core.principals import READ_SCOPES, WRITE_SCOPES, principal_for_user


def request_principal(request):
    """The `Principal` of a DRF request (token or admin-site user), or None."""
    return principal_for_user(request.user)


class HasScope(BasePermission):
    """Allow a request when the caller's scope is among the view's scopes.

    Views set `read_scopes` / `write_scopes` (defaults: admin, engine, read for
    safe methods; admin, engine otherwise), or `action_scopes` per action.
    """

    message = "This token's scope does not allow this call."

    def has_permission(self, request, view) -> bool:
        principal = request_principal(request)
        if principal is None:
            return False
        action_scopes = getattr(view, "action_scopes", {})
        action = getattr(view, "action", None)
        if action in action_scopes:
            allowed = action_scopes[action]
        elif request.method in SAFE_METHODS:
            allowed = getattr(view, "read_scopes", READ_SCOPES)
        else:
            allowed = getattr(view, "write_scopes", WRITE_SCOPES)
        return principal.scope in allowed
