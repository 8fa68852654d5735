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
        allowed = self.allowed_scopes(request, view)
        if principal.scope in allowed:
            return True
        # DRF instantiates permissions per request, so the refusal can name what this call needs.
        self.message = scope_refusal(principal.scope, allowed)
        return False

    @staticmethod
    def allowed_scopes(request, view) -> frozenset:
        """The scopes the view accepts for this request's action or method."""
        action_scopes = getattr(view, "action_scopes", {})
        action = getattr(view, "action", None)
        if action in action_scopes:
            allowed = action_scopes[action]
        elif request.method in SAFE_METHODS:
            allowed = getattr(view, "read_scopes", READ_SCOPES)
        else:
            allowed = getattr(view, "write_scopes", WRITE_SCOPES)
        return frozenset(allowed)


#: Least capable first: a refusal suggests making the least capable scope that would do.
_SCOPE_ORDER = ("read", "engine", "admin", "drone", "execution")


def scope_refusal(scope: str, allowed) -> str:
    """The sentence of a 403 for `scope`: which scope(s) the call needs and how to make such a token."""
    needed = sorted((str(name) for name in allowed), key=lambda name: (
        _SCOPE_ORDER.index(name) if name in _SCOPE_ORDER else len(_SCOPE_ORDER), name))
    if not needed:
        return f"This call is not open to API tokens (this token's scope is {scope})."
    names = " or ".join(needed)
    hint = ""
    if needed[0] in ("read", "engine", "admin"):
        hint = (f" Make one with `.venv/bin/python manage.py issue_token --scope {needed[0]}` "
                "(or admin → API tokens → Add).")
    return f"This call needs a token with scope {names}; this token's scope is {scope}.{hint}"
