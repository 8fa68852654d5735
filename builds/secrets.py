"""Job secrets (SCM credential, secret env vars) encrypted at rest with a key derived from SECRET_KEY.

Only the claim response to the drone that runs the build ever carries them in
clear; every other surface shows their names at most.
"""
import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    key = hashlib.sha256(f"swarm-build-secrets:{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_text(plaintext: str) -> str:
    """Encrypt a string; the empty string stays empty."""
    if not plaintext:
        return ""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_text(ciphertext: str) -> str:
    """Decrypt what `encrypt_text` produced; a token from another key decrypts to ''."""
    if not ciphertext:
        return ""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        return ""


def encrypt_mapping(values: dict[str, str]) -> str:
    """Encrypt a name → value mapping of secret env vars."""
    return encrypt_text(json.dumps(values, sort_keys=True)) if values else ""


def decrypt_mapping(ciphertext: str) -> dict[str, str]:
    """Decrypt a mapping stored by `encrypt_mapping`."""
    text = decrypt_text(ciphertext)
    return json.loads(text) if text else {}
