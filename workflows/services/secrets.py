"""Tenant secrets: set (encrypted at rest, swarm/core/secret_box.py), read for a workflow, mask in output.

Plaintext leaves this module only for the metadata service
(`workflows.services.boot`) and for masking what executions report; the
audit log names a secret, never its value.
"""
from __future__ import annotations

import re

from django.db import IntegrityError, transaction

from swarm.core.errors import ApiError, Conflict
from swarm.core.principals import Principal
from swarm.core.secret_box import encrypt_text
from swarm.core.services import audit_record
from tenancy.models import Tenant
from workflows.models import TenantSecret, Workflow

SECRET_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_MASK = "********"


def _check_secret_workflows(tenant: Tenant, workflows) -> list[Workflow]:
    workflows = list(workflows or [])
    foreign = [w for w in workflows if w.tenant_id != tenant.pk]
    if foreign:
        raise ApiError(f"Workflow {foreign[0]} belongs to another tenant.", code="invalid", field="workflows")
    return workflows


def tenant_secret_set(
    *, tenant: Tenant, name: str, value: str | None, workflows=None, actor: Principal | str = "system"
) -> TenantSecret:
    """Create or update a tenant secret; `value=None` keeps the stored value (write-only field left empty)."""
    if not SECRET_NAME_PATTERN.match(name or ""):
        raise ApiError("A secret name is an environment variable name (letters, digits, _).", code="invalid",
                       field="name")
    workflows = _check_secret_workflows(tenant, workflows) if workflows is not None else None
    with transaction.atomic():
        secret = TenantSecret.objects.select_for_update().filter(tenant=tenant, name=name).first()
        if secret is None:
            if not value:
                raise ApiError("A new secret needs a value.", code="missing_field", field="value")
            try:
                secret = TenantSecret.objects.create(tenant=tenant, name=name, ciphertext=encrypt_text(value))
            except IntegrityError:
                raise Conflict(f"Secret {name} already exists.", code="secret_exists", field="name") from None
        elif value:
            secret.ciphertext = encrypt_text(value)
            secret.save(update_fields=["ciphertext", "updated_at"])
        if workflows is not None:
            secret.workflows.set(workflows)
        # The audit log names the secret, never its value.
        audit_record(actor=actor, action="secret.set", obj=secret, tenant_id=tenant.pk,
                     detail={"name": name, "value_changed": bool(value)})
    return secret


def secrets_for_workflow(*, workflow: Workflow) -> dict[str, str]:
    """Plaintext secrets attached to a workflow (only the metadata service and masking use this)."""
    return {secret.name: secret.value
            for secret in TenantSecret.objects.filter(tenant_id=workflow.tenant_id, workflows=workflow)}


def mask_secrets(*, text: str, secret_values) -> str:
    """`text` with every secret value replaced by a mask (longest values first)."""
    for value in sorted((v for v in secret_values if v), key=len, reverse=True):
        if value in text:
            text = text.replace(value, SECRET_MASK)
    return text


def mask_data(*, data, secret_values):
    """`data` (strings, dicts and lists of them) with every secret value masked."""
    if isinstance(data, str):
        return mask_secrets(text=data, secret_values=secret_values)
    if isinstance(data, dict):
        return {key: mask_data(data=value, secret_values=secret_values) for key, value in data.items()}
    if isinstance(data, list):
        return [mask_data(data=value, secret_values=secret_values) for value in data]
    return data
