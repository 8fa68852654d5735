"""Symmetric encryption of secrets stored in drone rows (hypervisor API tokens, join tokens).

The key derives from SWARM_SECRET_KEY (swarm/core/derived_secrets.py), so a
database dump alone does not reveal the secrets; rotating the secret key
means re-entering them.
"""
from cryptography.fernet import InvalidToken

from swarm.core.derived_secrets import DerivedSecretBox

_box = DerivedSecretBox("swarm.drones.secrets:")


def encrypt_secret(plaintext: str) -> str:
    """Encrypt a secret for storage (empty stays empty)."""
    return _box.encrypt(plaintext)


def decrypt_secret(ciphertext: str) -> str:
    """Decrypt a stored secret; raises ValueError when the key changed."""
    try:
        return _box.decrypt(ciphertext)
    except InvalidToken as exc:
        raise ValueError("stored secret cannot be decrypted (was SWARM_SECRET_KEY changed?)") from exc
