"""Writes for tokens and the audit log."""
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from swarm.core.choices import TokenScope
from swarm.core.models import ApiToken, AuditLogEntry
from swarm.core.principals import Principal
from swarm.core.tokens import generate_token


def api_token_issue(
    *,
    scope: str,
    name: str = "",
    tenant=None,
    subject_type: str = "",
    subject_id: str = "",
    expires_at: datetime | None = None,
    created_by=None,
) -> tuple[ApiToken, str]:
    """Create a token and return it with its plaintext, which is never stored."""
    if scope not in TokenScope.values:
        raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(TokenScope.values)}")
    generated = generate_token()
    token = ApiToken.objects.create(
        name=name,
        scope=scope,
        tenant=tenant,
        prefix=generated.prefix,
        digest=generated.digest,
        subject_type=subject_type,
        subject_id=str(subject_id),
        expires_at=expires_at,
        created_by=created_by,
    )
    return token, generated.plaintext


def api_token_revoke(*, token: ApiToken, actor: str = "system") -> ApiToken:
    """Revoke a token at once; later requests with it are refused."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="token.revoke", obj=token, tenant_id=token.tenant_id)
    return token


def api_tokens_revoke_for_subject(*, subject_type: str, subject_id: str) -> int:
    """Revoke every live token bound to one drone or execution."""
    return ApiToken.objects.filter(
        subject_type=subject_type, subject_id=str(subject_id), revoked_at__isnull=True
    ).update(revoked_at=timezone.now())


def audit_record(*, actor, action: str, obj, tenant_id: int | None = None, detail: dict | None = None) -> None:
    """Append an audit log entry once the surrounding transaction commits."""
    actor_label = str(actor) if not isinstance(actor, Principal) else (actor.label or actor.scope)

    def write() -> None:
        AuditLogEntry.objects.create(
            actor=actor_label[:200],
            action=action,
            object_type=obj._meta.label_lower,
            object_id=str(obj.pk),
            tenant_id=tenant_id,
            detail=detail or {},
        )

    transaction.on_commit(write)
