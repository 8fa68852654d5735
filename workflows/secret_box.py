"""Encryption at rest for tenant secrets: Fernet keys from SWARM_SECRETS_KEYS (MultiFernet).

The first key encrypts; every key decrypts, so rotation is: put a new key
first, run `manage.py rotate_secrets` (re-encrypts every row with it), then
drop the old key. When SWARM_SECRETS_KEYS is unset a key is derived from
SECRET_KEY — convenient in development, but then rotating SECRET_KEY makes
every stored secret unreadable, so production sets explicit keys.
"""
from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _derived_development_key() -> bytes:
    digest = hashlib.sha256(f"swarm-tenant-secrets:{settings.SECRET_KEY}".encode()).digest()
    return base64.urlsafe_b64encode(digest)


def secret_keys() -> list[bytes]:
    """The configured Fernet keys, newest (the encrypting one) first."""
    configured = [key.strip() for key in settings.SWARM_SECRETS_KEYS if key.strip()]
    if not configured:
        return [_derived_development_key()]
    keys = []
    for index, key in enumerate(configured):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"SWARM_SECRETS_KEYS entry {index} is not a Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
        keys.append(key.encode())
    return keys


def _box() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in secret_keys()])


def encrypt_secret(plaintext: str) -> str:
    """Encrypt a secret value with the first configured key."""
    return _box().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    """Decrypt a stored secret with any configured key (ValueError when none fits)."""
    try:
        return _box().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise ValueError("the secret cannot be decrypted with any key in SWARM_SECRETS_KEYS") from None


def reencrypt_secret(ciphertext: str) -> str:
    """The same secret encrypted with the current first key (for rotation)."""
    try:
        return _box().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise ValueError("the secret cannot be decrypted with any key in SWARM_SECRETS_KEYS") from None
