"""Symmetric encryption of secrets stored in drone rows (hypervisor API tokens).

The key derives from SWARM_SECRET_KEY, so a database dump alone does not
reveal the secrets; rotating the secret key means re-entering them.
"""
import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    digest = hashlib.sha256(("swarm.drones.secrets:" + settings.SECRET_KEY).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(plaintext: str) -> str:
    """Encrypt a secret for storage (empty stays empty)."""
    if not plaintext:
        return ""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    """Decrypt a stored secret; raises ValueError when the key changed."""
    if not ciphertext:
        return ""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("stored secret cannot be decrypted (was SWARM_SECRET_KEY changed?)") from exc
