"""Job secrets (SCM credential, secret env vars) encrypted at rest with a key derived from SECRET_KEY.

Only the claim response to the drone that runs the build ever carries them in
clear; every other surface shows their names at most.
"""
import json

from cryptography.fernet import InvalidToken

from swarm.core.derived_secrets import DerivedSecretBox

_box = DerivedSecretBox("swarm-build-secrets:")


def encrypt_text(plaintext: str) -> str:
    """Encrypt a string; the empty string stays empty."""
    return _box.encrypt(plaintext)


def decrypt_text(ciphertext: str) -> str:
    """Decrypt what `encrypt_text` produced; a token from another key decrypts to ''."""
    try:
        return _box.decrypt(ciphertext)
    except InvalidToken:
        return ""


def encrypt_mapping(values: dict[str, str]) -> str:
    """Encrypt a name → value mapping of secret env vars."""
    return encrypt_text(json.dumps(values, sort_keys=True)) if values else ""


def decrypt_mapping(ciphertext: str) -> dict[str, str]:
    """Decrypt a mapping stored by `encrypt_mapping`."""
    text = decrypt_text(ciphertext)
    return json.loads(text) if text else {}
