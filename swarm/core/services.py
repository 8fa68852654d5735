"""Writes for tokens, the audit log and the rotation of stored secrets."""
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from swarm.core.choices import TokenScope
from swarm.core.models import ApiToken, AuditLogEntry
from swarm.core.principals import Principal
from swarm.core.secret_box import EncryptedColumn, SecretUndecryptable, encrypted_columns, is_current, reencrypt
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


def audit_record(*, actor, action: str, obj, tenant_id: int | None = None, detail: dict | None = None,
                 object_type: str = "", object_id: str = "") -> None:
    """Append an audit log entry once the surrounding transaction commits.

    `obj` is the row acted on; a refusal about something that is no row (a client address, a login
    name) passes `obj=None` with `object_type` and `object_id`.
    """
    actor_label = str(actor) if not isinstance(actor, Principal) else (actor.label or actor.scope)
    if obj is not None:
        object_type, object_id = obj._meta.label_lower, str(obj.pk)

    def write() -> None:
        AuditLogEntry.objects.create(
            actor=actor_label[:200],
            action=action,
            object_type=object_type[:64],
            object_id=object_id[:64],
            tenant_id=tenant_id,
            detail=detail or {},
        )

    transaction.on_commit(write)


# --- secrets at rest ------------------------------------------------------------


@dataclass
class ColumnRotation:
    """What a rotation did (or, dry, would do) to one encrypted column; empty values are not counted."""

    label: str
    reencrypted: int = 0
    current: int = 0
    undecryptable: list[str] = field(default_factory=list)


@dataclass
class SecretsRotation:
    """What `secrets_rotate` did, column by column."""

    dry_run: bool
    columns: list[ColumnRotation]

    @property
    def reencrypted(self) -> int:
        return sum(column.reencrypted for column in self.columns)

    @property
    def current(self) -> int:
        return sum(column.current for column in self.columns)

    @property
    def undecryptable(self) -> list[str]:
        return [where for column in self.columns for where in column.undecryptable]


def secrets_rotate(*, dry_run: bool = False, batch_size: int = 500) -> SecretsRotation:
    """Re-encrypt every registered encrypted column with the first key of SWARM_SECRETS_KEYS.

    Values already under the first key are left alone, so a second run
    changes nothing. Each batch of rows is locked and written in its own
    transaction, so a large table is never held at once. A value no key
    decrypts is left as it is and reported by row and field; `dry_run` only
    counts.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return SecretsRotation(dry_run=dry_run, columns=[
        _column_rotate(column, dry_run=dry_run, batch_size=batch_size) for column in encrypted_columns()])


def _column_rotate(column: EncryptedColumn, *, dry_run: bool, batch_size: int) -> ColumnRotation:
    report = ColumnRotation(label=column.label)
    manager = column.model._base_manager
    last_pk = None
    while True:
        with transaction.atomic():
            rows = manager.exclude(**{column.field: ""}).order_by("pk")
            if last_pk is not None:
                rows = rows.filter(pk__gt=last_pk)
            if not dry_run:
                rows = rows.select_for_update(of=("self",))
            batch = list(rows.values_list("pk", column.field)[:batch_size])
            for pk, ciphertext in batch:
                if is_current(ciphertext):
                    report.current += 1
                    continue
                try:
                    rotated = reencrypt(ciphertext, where=column.where(pk))
                except SecretUndecryptable as error:
                    report.undecryptable.append(error.where)
                    continue
                if not dry_run:
                    # update(): a rotation is not an edit (no auto_now bump, no signals).
                    manager.filter(pk=pk).update(**{column.field: rotated})
                report.reencrypted += 1
        if len(batch) < batch_size:
            return report
        last_pk = batch[-1][0]
