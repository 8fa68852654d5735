"""Secrets at rest: one Fernet key ring for every secret the control plane stores, and the columns that hold them.

Every stored secret (tenant secrets, job SCM credentials, secret env vars and
webhook secrets, hypervisor API tokens, join tokens) is one Fernet token in an
`EncryptedTextField` column; `encrypted_columns()` lists them all, so
`manage.py rotate_secrets` (swarm.core.services.secrets_rotate) and the tests
can walk every one and none can be left out.

Keys:

* `SWARM_SECRETS_KEYS` (comma-separated Fernet keys): the **first** encrypts,
  **all** decrypt. Rotation: put a new key first, run `rotate_secrets`, then
  drop the old key.
* Unset: one key derived from SECRET_KEY (development only: changing the
  secret key then makes every stored secret unreadable).
* Decrypt-only, always: the per-purpose keys the three earlier boxes derived
  from SECRET_KEY (see LEGACY_PURPOSES).

    stored = encrypt_text("hunter2")                 # "" stays ""
    decrypt_text(stored, where="builds.Job 3 scm_credential_encrypted")  # SecretUndecryptable if no key fits

A value no key decrypts raises `SecretUndecryptable` (a ValueError), never a
silent empty string: a caller that hands a secret to someone must not hand
out "" instead.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

#: The derivation of the development key, sha256(purpose + SECRET_KEY). It is the
#: one tenant secrets always used, so their ciphertexts need no change.
DEVELOPMENT_KEY_PURPOSE = "swarm-tenant-secrets:"

#: Keys the earlier boxes derived from SECRET_KEY: builds/secrets.py (job
#: credentials and secret env vars), drones/secrets_box.py (hypervisor tokens,
#: join tokens) and workflows/secret_box.py's development key (tenant secrets).
#:
#: They stay in the ring as decrypt-only keys rather than being re-encrypted by
#: a data migration: an upgrade then needs no operator action and cannot fail
#: half-way in `migrate` on a value written under some other secret key (it
#: would have to stop the deploy or drop the value), and `rotate_secrets` moves
#: whatever still sits under them onto the current first key whenever the
#: operator runs it (its --dry-run counts them). Nothing is ever encrypted with
#: them once SWARM_SECRETS_KEYS is set; knowing SECRET_KEY then reveals only
#: values not yet rotated.
LEGACY_PURPOSES = ("swarm-build-secrets:", "swarm.drones.secrets:", DEVELOPMENT_KEY_PURPOSE)

#: Kinds of encrypted column: one string, or a name → value mapping stored as JSON.
TEXT = "text"
MAPPING = "mapping"


class SecretUndecryptable(ValueError):
    """A stored secret that no key in the ring decrypts.

    `where` names the row and field when the caller knows them (e.g.
    "builds.Job 12 scm_credential_encrypted").
    """

    def __init__(self, where: str = ""):
        self.where = where
        subject = f"{where}: the stored secret" if where else "A stored secret"
        super().__init__(
            f"{subject} cannot be decrypted with any key in SWARM_SECRETS_KEYS (nor the legacy keys derived from "
            f"SWARM_SECRET_KEY). Put the key it was written with back into SWARM_SECRETS_KEYS, or enter the "
            f"secret again.")


def derived_key(purpose: str, secret_key: str | None = None) -> bytes:
    """The Fernet key sha256(`purpose` + SECRET_KEY), url-safe base64."""
    secret_key = settings.SECRET_KEY if secret_key is None else secret_key
    return base64.urlsafe_b64encode(hashlib.sha256(f"{purpose}{secret_key}".encode()).digest())


def development_key() -> bytes:
    """The key that encrypts when SWARM_SECRETS_KEYS is unset (derived from SECRET_KEY)."""
    return derived_key(DEVELOPMENT_KEY_PURPOSE)


@dataclass(frozen=True)
class _Ring:
    current: Fernet  # the encrypting key
    every: MultiFernet  # the encrypting key first, then every other configured key, then the legacy keys


@functools.lru_cache(maxsize=16)
def _ring_for(configured: tuple[str, ...], secret_key: str) -> _Ring:
    keys: list[bytes] = []
    for index, key in enumerate(configured):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"SWARM_SECRETS_KEYS entry {index} is not a Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
        keys.append(key.encode())
    if not keys:
        keys.append(derived_key(DEVELOPMENT_KEY_PURPOSE, secret_key))
    for purpose in LEGACY_PURPOSES:
        keys.append(derived_key(purpose, secret_key))
    unique = list(dict.fromkeys(keys))
    fernets = [Fernet(key) for key in unique]
    return _Ring(current=fernets[0], every=MultiFernet(fernets))


def _ring() -> _Ring:
    configured = tuple(key.strip() for key in settings.SWARM_SECRETS_KEYS if key.strip())
    return _ring_for(configured, settings.SECRET_KEY)


def encrypt_text(plaintext: str) -> str:
    """The ciphertext of `plaintext` under the first key; the empty string (no secret) stays empty."""
    if not plaintext:
        return ""
    return _ring().current.encrypt(plaintext.encode()).decode()


def decrypt_text(ciphertext: str, *, where: str = "") -> str:
    """The plaintext of a stored secret; "" stays ""; SecretUndecryptable (naming `where`) when no key fits."""
    if not ciphertext:
        return ""
    try:
        return _ring().every.decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretUndecryptable(where) from None


def encrypt_mapping(values: dict[str, str]) -> str:
    """The ciphertext of a name → value mapping (secret env vars); an empty mapping stays ""."""
    return encrypt_text(json.dumps(values, sort_keys=True)) if values else ""


def decrypt_mapping(ciphertext: str, *, where: str = "") -> dict[str, str]:
    """The mapping `encrypt_mapping` stored; SecretUndecryptable when no key fits."""
    text = decrypt_text(ciphertext, where=where)
    return json.loads(text) if text else {}


def is_current(ciphertext: str) -> bool:
    """Whether a stored value is empty or already encrypted with the first key (rotation leaves it alone)."""
    if not ciphertext:
        return True
    try:
        _ring().current.decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


def reencrypt(ciphertext: str, *, where: str = "") -> str:
    """The same secret encrypted with the first key (rotation); SecretUndecryptable when no key fits."""
    if not ciphertext:
        return ""
    ring = _ring()
    try:
        return ring.every.rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretUndecryptable(where) from None


# --- the columns --------------------------------------------------------------


class EncryptedTextField(models.TextField):
    """A column that holds a Fernet token of this box, never a plaintext; `kind` is TEXT or MAPPING.

    Declaring a secret column with this field is what puts it in
    `encrypted_columns()` (rotation, the round-trip tests). The column is
    never editable in a ModelForm: forms offer write-only inputs and go
    through `write_secret()`. Models read it with `read_secret()`.
    """

    description = "Encrypted secret (Fernet token)"

    def __init__(self, *args, kind: str = TEXT, **kwargs):
        if kind not in (TEXT, MAPPING):
            raise ValueError(f"EncryptedTextField kind must be {TEXT!r} or {MAPPING!r}, not {kind!r}")
        self.kind = kind
        kwargs["editable"] = False
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("editable", None)
        if self.kind != TEXT:
            kwargs["kind"] = self.kind
        return name, path, args, kwargs


@dataclass(frozen=True)
class EncryptedColumn:
    """One registered encrypted column: a model and the name of its EncryptedTextField."""

    model: type[models.Model]
    field: str
    kind: str

    @property
    def label(self) -> str:
        return f"{self.model._meta.label}.{self.field}"

    def where(self, pk) -> str:
        """How errors and reports name one row's value."""
        return where(self.model, pk, self.field)


def where(model, pk, field: str) -> str:
    """"<app.Model> <pk> <field>": the row and field a SecretUndecryptable names."""
    return f"{model._meta.label} {pk} {field}"


def encrypted_columns() -> list[EncryptedColumn]:
    """Every EncryptedTextField of every installed (concrete, managed) model, in a stable order."""
    from django.apps import apps

    columns = []
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                columns.append(EncryptedColumn(model=model, field=field.name, kind=field.kind))
    return sorted(columns, key=lambda column: column.label)


def _encrypted_field(instance: models.Model, field: str) -> EncryptedTextField:
    model_field = instance._meta.get_field(field)
    if not isinstance(model_field, EncryptedTextField):
        raise TypeError(f"{instance._meta.label}.{field} is not an EncryptedTextField")
    return model_field


def read_secret(instance: models.Model, field: str):
    """The plaintext of a row's encrypted column (a str, or a dict for a MAPPING column)."""
    model_field = _encrypted_field(instance, field)
    ciphertext = getattr(instance, field)
    location = where(type(instance), instance.pk, field)
    if model_field.kind == MAPPING:
        return decrypt_mapping(ciphertext, where=location)
    return decrypt_text(ciphertext, where=location)


def write_secret(instance: models.Model, field: str, value) -> None:
    """Set a row's encrypted column to the ciphertext of `value` (the caller saves)."""
    model_field = _encrypted_field(instance, field)
    if model_field.kind == MAPPING:
        setattr(instance, field, encrypt_mapping(value or {}))
    else:
        setattr(instance, field, encrypt_text(value or ""))


def plaintext_property(field: str, doc: str = "") -> property:
    """A model property reading and writing the plaintext of encrypted column `field` (only the ciphertext is stored).

    Reading raises SecretUndecryptable when no key fits. Being a property,
    it is accepted by `Model(...)` and `QuerySet.create(...)` as a keyword.
    """
    return property(lambda row: read_secret(row, field), lambda row, value: write_secret(row, field, value),
                    doc=doc or f"The decrypted {field} (SecretUndecryptable when no key fits).")
