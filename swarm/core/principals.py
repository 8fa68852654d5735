"""Who is calling: a token principal or an admin-site user, with one scope check.

Everything that scopes a query asks a `Principal`, never the raw request, so
API views, admin views and consumers share one rule for tenant isolation.
"""
from dataclasses import dataclass

from swarm.core.choices import TokenScope

READ_SCOPES = frozenset({TokenScope.ADMIN, TokenScope.ENGINE, TokenScope.READ})
WRITE_SCOPES = frozenset({TokenScope.ADMIN, TokenScope.ENGINE})


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, reduced to what authorisation needs."""

    scope: str
    tenant_id: int | None = None
    token_id: int | None = None
    user_id: int | None = None
    subject_type: str = ""
    subject_id: str = ""
    label: str = ""

    # Django and DRF treat anything with is_authenticated as a user.
    is_authenticated = True
    is_active = True
    is_anonymous = False

    @property
    def is_admin(self) -> bool:
        """Admin principals see and may do everything."""
        return self.scope == TokenScope.ADMIN

    @property
    def is_tenant_bound(self) -> bool:
        """Whether only one tenant's objects are visible."""
        return self.tenant_id is not None

    def sees_tenant(self, tenant_id: int | None) -> bool:
        """Whether an object of `tenant_id` is visible to this principal."""
        return not self.is_tenant_bound or self.tenant_id == tenant_id

    def __str__(self) -> str:
        return self.label or self.scope


def principal_for_user(user) -> Principal | None:
    """An admin principal for staff users of the admin site (session auth)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    if isinstance(user, Principal):
        return user
    if user.is_staff:
        return Principal(scope=TokenScope.ADMIN, user_id=user.pk, label=f"user:{user.get_username()}")
    return None


def system_principal(label: str = "system") -> Principal:
    """The principal used by beat, tasks and management commands."""
    return Principal(scope=TokenScope.ADMIN, label=label)
