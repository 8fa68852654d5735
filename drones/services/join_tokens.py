"""Join tokens: issued by an operator, checked at registration and by the provisioning downloads.

A join token's plaintext (`swj_…`) is shown once; the row keeps its digest
for lookup and an encrypted copy so `issue_join_token --reuse` can hand the
same token out again.
"""
from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from drones.choices import ProvisioningStatus
from drones.models import JoinToken
from drones.selectors import join_token_find
from swarm.core.errors import ApiError
from swarm.core.secret_box import SecretUndecryptable, encrypt_text
from swarm.core.services import audit_record
from swarm.core.tokens import generate_token

logger = logging.getLogger(__name__)


def join_token_issue(*, name: str, expires_at: datetime | None = None, max_uses: int | None = None,
                     created_by=None) -> tuple[JoinToken, str]:
    """Create a join token; returns it with its plaintext (`swj_…`), which is never stored."""
    if not name or len(name) > 100:
        raise ApiError("A join token needs a name of 1-100 characters.", code="invalid", field="name")
    if max_uses is not None and max_uses < 1:
        raise ApiError("max_uses must be at least 1.", code="invalid", field="max_uses")
    generated = generate_token("swj")
    token = JoinToken.objects.create(name=name, prefix=generated.prefix, digest=generated.digest,
                                     plaintext_encrypted=encrypt_text(generated.plaintext),
                                     expires_at=expires_at, max_uses=max_uses, created_by=created_by)
    audit_record(actor=created_by.get_username() if created_by else "system", action="join_token.issue", obj=token)
    return token, generated.plaintext


def join_token_revoke(*, token: JoinToken, actor: str = "system") -> JoinToken:
    """Revoke a join token; registrations with it are refused from now on."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="join_token.revoke", obj=token)
    return token


def join_token_reuse(*, name: str) -> tuple[JoinToken, str]:
    """The usable join token called `name` with its plaintext, or a new one (`issue_join_token --reuse`).

    Tokens whose plaintext can no longer be decrypted (the secret key changed)
    are revoked and replaced. Drones that already registered keep their tokens.
    """
    with transaction.atomic():
        for token in JoinToken.objects.select_for_update().filter(name=name, revoked_at__isnull=True).order_by(
                "-created_at"):
            try:
                plaintext = token.plaintext
            except SecretUndecryptable as error:
                logger.warning("join token %s is replaced: %s", token.pk, error)
                plaintext = ""
            if token.is_usable and plaintext:
                return token, plaintext
            join_token_revoke(token=token, actor="system:reuse")
        return join_token_issue(name=name)


def join_token_check(*, plaintext: str, field: str = "token") -> JoinToken:
    """The usable join token matching `plaintext`, or a 401/403 JSON error saying why not."""
    if not plaintext:
        raise ApiError("A join token is required.", code="missing_field", field=field, status_code=401)
    token = join_token_find(plaintext)
    if token is None:
        raise ApiError("Unknown join token.", code="authentication_failed", field=field, status_code=401)
    if token.revoked_at is not None:
        raise ApiError("This join token was revoked.", code="token_revoked", field=field, status_code=403)
    if token.expires_at is not None and token.expires_at <= timezone.now():
        raise ApiError("This join token has expired.", code="token_expired", field=field, status_code=403)
    if token.max_uses is not None and token.uses >= token.max_uses:
        raise ApiError("This join token has no uses left.", code="token_used_up", field=field, status_code=403)
    return token


def join_token_mark_script_fetched(*, token: JoinToken) -> None:
    """Provisioning progress: the bootstrap script was downloaded with this token."""
    JoinToken.objects.filter(pk=token.pk, provisioning_status=ProvisioningStatus.ISSUED).update(
        provisioning_status=ProvisioningStatus.SCRIPT_FETCHED, script_fetched_at=timezone.now())
