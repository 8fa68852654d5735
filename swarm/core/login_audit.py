"""Admin login lockouts (django-axes) written to the audit log, like the API's failed-authentication limit."""
from __future__ import annotations

import logging

from axes.signals import user_locked_out
from django.conf import settings
from django.dispatch import receiver

from swarm.core.services import audit_record

logger = logging.getLogger(__name__)


@receiver(user_locked_out, dispatch_uid="swarm.core.login_audit.lockout")
def audit_admin_lockout(sender, request, username, ip_address, **kwargs) -> None:
    """One audit entry each time django-axes locks a user name out from an address."""
    logger.warning("admin login locked out for user %r from %s after %s failures",
                   username, ip_address, settings.AXES_FAILURE_LIMIT)
    audit_record(actor=f"address:{ip_address}", action="admin.login_locked_out", obj=None,
                 object_type="auth.user", object_id=str(username or "")[:64],
                 detail={"username": username or "", "address": ip_address,
                         "failure_limit": settings.AXES_FAILURE_LIMIT,
                         "cooloff_seconds": int(settings.AXES_COOLOFF_TIME.total_seconds())})
