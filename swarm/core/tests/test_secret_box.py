"""Secrets at rest (swarm/core/secret_box.py): every encrypted column, the legacy keys, rotation, the one error."""
import base64
import hashlib
import io
import json
import re

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from swarm.core.secret_box import (
    MAPPING,
    EncryptedTextField,
    SecretUndecryptable,
    encrypt_text,
    encrypted_columns,
    read_secret,
    write_secret,
)

pytestmark = pytest.mark.django_db

#: Every encrypted column there is. A new one fails this list and the row factory below on purpose.
EXPECTED_COLUMNS = {
    "builds.Job.scm_credential_encrypted",
    "builds.Job.secrets_encrypted",
    "builds.Job.webhook_secret_encrypted",
    "builds.WebhookNamespaceSecret.secret_encrypted",
    "drones.Hypervisor.token_secret_encrypted",
    "drones.JoinToken.plaintext_encrypted",
    "workflows.TenantSecret.ciphertext",
}

#: The key each column was written with before the one box: sha256(purpose + SECRET_KEY) (the
#: webhook secret was stored in clear; its migration encrypts it, see builds/tests/test_webhooks.py;
#: namespace webhook secrets came after the one box).
LEGACY_PURPOSE_OF = {
    "builds.Job.scm_credential_encrypted": "swarm-build-secrets:",
    "builds.Job.secrets_encrypted": "swarm-build-secrets:",
    "drones.Hypervisor.token_secret_encrypted": "swarm.drones.secrets:",
    "drones.JoinToken.plaintext_encrypted": "swarm.drones.secrets:",
    "workflows.TenantSecret.ciphertext": "swarm-tenant-secrets:",
}

#: Names of columns that look like secrets but are not stored ones (a hash, an id).
NOT_SECRETS = {"auth.User.password"}
SECRET_LOOKING = re.compile(r"secret|credential|password|cipher|encrypted|private")


def make_rows(*, tenant_secrets: int = 1) -> dict[str, list]:
    """Rows of every model with an encrypted column, keyed by model label, made like a user would."""
    from builds.models import WebhookNamespaceSecret
    from builds.tests.factories import make_job
    from drones.models import Hypervisor
    from drones.services import join_token_issue
    from workflows.services import tenant_secret_set
    from tenancy.models import Tenant

    tenant = Tenant.objects.create(slug="secret-box", name="Secret box")
    return {
        "builds.Job": [make_job(name="secret-box-job")],
        "builds.WebhookNamespaceSecret": [WebhookNamespaceSecret.objects.create(
            provider="github", namespace="secret-box-org", secret_encrypted="")],
        "drones.Hypervisor": [Hypervisor.objects.create(name="pve", url="https://pve.example.com:8006",
                                                        token_id="swarm@pve!l3")],
        "drones.JoinToken": [join_token_issue(name="secret-box")[0]],
        "workflows.TenantSecret": [tenant_secret_set(tenant=tenant, name=f"SECRET_{n}", value="initial")
                                   for n in range(tenant_secrets)],
    }


def plaintext_for(column, row):
    text = f"plain-{column.label}-{row.pk}"
    return {"TOKEN": text} if column.kind == MAPPING else text


def stored_bytes(column, plaintext) -> bytes:
    """What the box encrypts for a plaintext of this column."""
    return (json.dumps(plaintext, sort_keys=True) if column.kind == MAPPING else plaintext).encode()


def fill(rows) -> dict:
    """Write a distinct plaintext into every encrypted column of every row; returns {(label, pk): plaintext}."""
    written = {}
    for column in encrypted_columns():
        for row in rows[column.model._meta.label]:
            value = plaintext_for(column, row)
            write_secret(row, column.field, value)
            column.model._base_manager.filter(pk=row.pk).update(**{column.field: getattr(row, column.field)})
            written[(column.label, row.pk)] = value
    return written


def raw_value(column, pk) -> str:
    """The column as PostgreSQL holds it."""
    meta = column.model._meta
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "{meta.get_field(column.field).column}" FROM "{meta.db_table}" '
                       f'WHERE "{meta.pk.column}" = %s', [pk])
        return cursor.fetchone()[0]


def raw_values(rows) -> dict:
    return {(column.label, row.pk): raw_value(column, row.pk)
            for column in encrypted_columns() for row in rows[column.model._meta.label]}


def read_back(column, pk):
    return read_secret(column.model._base_manager.get(pk=pk), column.field)


def rotate(*args) -> str:
    out = io.StringIO()
    call_command("rotate_secrets", *args, stdout=out, stderr=out)
    return out.getvalue()


def legacy_fernet(purpose: str, secret_key: str) -> Fernet:
    """The key the earlier boxes derived (written out here on purpose: the old formula, not the box's)."""
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(f"{purpose}{secret_key}".encode()).digest()))


def test_the_registry_lists_every_encrypted_column():
    assert {column.label for column in encrypted_columns()} == EXPECTED_COLUMNS
    assert {column.label: column.kind for column in encrypted_columns()}["builds.Job.secrets_encrypted"] == MAPPING
    assert set(make_rows()) == {column.model._meta.label for column in encrypted_columns()}


def test_no_column_that_looks_like_a_secret_is_left_out_of_the_registry():
    unregistered = [
        f"{model._meta.label}.{field.name}"
        for model in apps.get_models() for field in model._meta.concrete_fields
        if SECRET_LOOKING.search(field.name) and not isinstance(field, EncryptedTextField)
        and f"{model._meta.label}.{field.name}" not in NOT_SECRETS
    ]
    assert unregistered == [], "store these with EncryptedTextField (swarm/core/secret_box.py)"


def test_every_registered_column_round_trips_and_is_never_stored_in_clear(settings):
    key = Fernet.generate_key()
    settings.SWARM_SECRETS_KEYS = [key.decode()]
    rows = make_rows()
    written = fill(rows)
    assert {label for label, _ in written} == EXPECTED_COLUMNS
    for column in encrypted_columns():
        for row in rows[column.model._meta.label]:
            value = written[(column.label, row.pk)]
            raw = raw_value(column, row.pk)
            assert f"plain-{column.label}" not in raw
            assert Fernet(key).decrypt(raw.encode()) == stored_bytes(column, value)
            assert read_back(column, row.pk) == value


def test_values_under_the_legacy_derived_keys_still_decrypt_and_rotate_moves_them(settings):
    new_key = Fernet.generate_key()
    settings.SWARM_SECRETS_KEYS = [new_key.decode()]
    rows = make_rows()
    written = fill(rows)
    assert set(LEGACY_PURPOSE_OF) | {"builds.Job.webhook_secret_encrypted",
                                     "builds.WebhookNamespaceSecret.secret_encrypted"} == EXPECTED_COLUMNS
    for column in encrypted_columns():
        purpose = LEGACY_PURPOSE_OF.get(column.label)
        if purpose is None:
            continue
        for row in rows[column.model._meta.label]:
            legacy = legacy_fernet(purpose, settings.SECRET_KEY).encrypt(
                stored_bytes(column, written[(column.label, row.pk)])).decode()
            column.model._base_manager.filter(pk=row.pk).update(**{column.field: legacy})

    for (label, pk), value in written.items():  # readable as they are, no operator action
        column = next(c for c in encrypted_columns() if c.label == label)
        assert read_back(column, pk) == value

    assert "would re-encrypt 5 secret(s)" in rotate("--dry-run")
    output = rotate()
    assert "re-encrypted 5 secret(s)" in output
    assert "builds.Job.webhook_secret_encrypted: re-encrypted 0, already current 1" in output
    for (label, pk), value in written.items():
        column = next(c for c in encrypted_columns() if c.label == label)
        assert Fernet(new_key).decrypt(raw_value(column, pk).encode()) == stored_bytes(column, value)
    assert "re-encrypted 0 secret(s)" in rotate(), "a second run changes nothing"


def test_rotation_to_a_new_first_key_reencrypts_every_column_and_the_old_key_can_then_go(settings):
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    settings.SWARM_SECRETS_KEYS = [old_key.decode()]
    rows = make_rows(tenant_secrets=3)
    written = fill(rows)
    count = len(written)
    assert count == len(EXPECTED_COLUMNS) + 2
    before = raw_values(rows)

    settings.SWARM_SECRETS_KEYS = [new_key.decode(), old_key.decode()]
    dry = rotate("--dry-run")
    assert f"would re-encrypt {count} secret(s)" in dry and "nothing changed" in dry
    assert raw_values(rows) == before, "a dry run changes nothing"

    assert f"re-encrypted {count} secret(s)" in rotate("--batch-size", "2")
    after = raw_values(rows)
    for (label, pk), value in written.items():
        column = next(c for c in encrypted_columns() if c.label == label)
        assert after[(label, pk)] != before[(label, pk)]
        assert Fernet(new_key).decrypt(after[(label, pk)].encode()) == stored_bytes(column, value)

    settings.SWARM_SECRETS_KEYS = [new_key.decode()]  # the old key is dropped: everything still reads
    for (label, pk), value in written.items():
        column = next(c for c in encrypted_columns() if c.label == label)
        assert read_back(column, pk) == value
    assert "re-encrypted 0 secret(s)" in rotate()
    assert raw_values(rows) == after


def test_a_value_no_key_decrypts_raises_one_error_naming_its_row_and_what_to_do(settings):
    settings.SWARM_SECRETS_KEYS = [Fernet.generate_key().decode()]
    rows = make_rows()
    fill(rows)
    settings.SWARM_SECRETS_KEYS = [Fernet.generate_key().decode()]  # the writing key is gone
    for column in encrypted_columns():
        for row in rows[column.model._meta.label]:
            with pytest.raises(SecretUndecryptable) as raised:
                read_back(column, row.pk)
            message = str(raised.value)
            assert isinstance(raised.value, ValueError)
            assert message.startswith(f"{column.model._meta.label} {row.pk} {column.field}: ")
            assert "Put the key it was written with back into SWARM_SECRETS_KEYS" in message
            assert "enter the secret again" in message
    # The models' own accessors raise the same error.
    job, hypervisor = rows["builds.Job"][0], rows["drones.Hypervisor"][0]
    token, tenant_secret = rows["drones.JoinToken"][0], rows["workflows.TenantSecret"][0]
    for read in (lambda: type(job).objects.get(pk=job.pk).webhook_secret,
                 lambda: type(hypervisor).objects.get(pk=hypervisor.pk).token_secret,
                 lambda: type(token).objects.get(pk=token.pk).plaintext,
                 lambda: type(tenant_secret).objects.get(pk=tenant_secret.pk).value):
        with pytest.raises(SecretUndecryptable):
            read()


def test_rotate_refuses_values_no_key_decrypts_names_them_and_leaves_them_as_they_are(settings):
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    settings.SWARM_SECRETS_KEYS = [old_key.decode()]
    rows = make_rows()
    written = fill(rows)
    hypervisor = rows["drones.Hypervisor"][0]
    lost = Fernet(Fernet.generate_key()).encrypt(b"gone").decode()
    type(hypervisor).objects.filter(pk=hypervisor.pk).update(token_secret_encrypted=lost)
    before = raw_values(rows)
    settings.SWARM_SECRETS_KEYS = [new_key.decode(), old_key.decode()]
    where = f"drones.Hypervisor {hypervisor.pk} token_secret_encrypted"

    out = io.StringIO()
    with pytest.raises(CommandError, match="1 stored secret"):
        call_command("rotate_secrets", "--dry-run", stdout=out, stderr=out)
    assert f"undecryptable, left unchanged: {where}" in out.getvalue()
    assert f"would re-encrypt {len(written) - 1} secret(s)" in out.getvalue()
    assert raw_values(rows) == before

    out = io.StringIO()
    with pytest.raises(CommandError, match="Put the key they were written with back into SWARM_SECRETS_KEYS"):
        call_command("rotate_secrets", stdout=out, stderr=out)
    assert f"undecryptable, left unchanged: {where}" in out.getvalue()
    after = raw_values(rows)
    hypervisor_label = "drones.Hypervisor.token_secret_encrypted"
    assert after[(hypervisor_label, hypervisor.pk)] == lost
    for (label, pk), value in written.items():
        if label != hypervisor_label:
            column = next(c for c in encrypted_columns() if c.label == label)
            assert Fernet(new_key).decrypt(after[(label, pk)].encode()) == stored_bytes(column, value)


def test_without_configured_keys_a_development_key_derived_from_the_secret_key_encrypts(settings):
    settings.SWARM_SECRETS_KEYS = []
    token = encrypt_text("dev-value")
    assert legacy_fernet("swarm-tenant-secrets:", settings.SECRET_KEY).decrypt(token.encode()) == b"dev-value"
    assert encrypt_text("") == ""


def test_a_malformed_key_is_a_configuration_error(settings):
    settings.SWARM_SECRETS_KEYS = [Fernet.generate_key().decode(), "not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="SWARM_SECRETS_KEYS entry 1"):
        encrypt_text("value")


def test_secrets_never_appear_in_the_admin_or_the_api(admin_client, admin_api):
    rows = make_rows()
    written = fill(rows)
    pages = [
        "/admin/builds/job/", f"/admin/builds/job/{rows['builds.Job'][0].pk}/change/",
        "/admin/drones/hypervisor/", f"/admin/drones/hypervisor/{rows['drones.Hypervisor'][0].pk}/change/",
        "/admin/builds/webhooknamespacesecret/",
        f"/admin/builds/webhooknamespacesecret/{rows['builds.WebhookNamespaceSecret'][0].pk}/change/",
        "/admin/workflows/tenantsecret/",
        f"/admin/workflows/tenantsecret/{rows['workflows.TenantSecret'][0].pk}/change/",
    ]
    # Join tokens are left out on purpose: their admin page shows the bootstrap command with the token.
    hidden = [value for (label, _), value in written.items() if not label.startswith("drones.JoinToken")]
    hidden = [value["TOKEN"] if isinstance(value, dict) else value for value in hidden]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        content = response.content.decode()
        assert not [value for value in hidden if value in content], page
    job = rows["builds.Job"][0]
    body = admin_api.get(f"/api/v1/jobs/{job.pk}").json()
    assert body["has_scm_credential"] and body["has_webhook_secret"] and body["secret_names"] == ["TOKEN"]
    assert not [value for value in hidden if value in json.dumps(body)]
