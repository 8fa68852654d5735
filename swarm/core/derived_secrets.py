"""Fernet encryption under a key derived from SWARM_SECRET_KEY, one key per purpose.

For secrets the control plane itself stores (job credentials, hypervisor API
tokens, join tokens): a database dump alone does not reveal them; rotating
the secret key means re-entering them. Tenant secrets use the rotatable
SWARM_SECRETS_KEYS instead (workflows/secret_box.py).

    box = DerivedSecretBox("swarm.drones.secrets:")
    stored = box.encrypt("token")      # "" stays ""
    box.decrypt(stored)                # raises cryptography.fernet.InvalidToken under another key
"""
import base64
import hashlib

from cryptography.fernet import Fernet
from django.conf import settings


class DerivedSecretBox:
    """Encrypt and decrypt strings with the key sha256(`purpose` + SECRET_KEY)."""

    def __init__(self, purpose: str):
        self.purpose = purpose

    def _fernet(self) -> Fernet:
        digest = hashlib.sha256(f"{self.purpose}{settings.SECRET_KEY}".encode()).digest()
        return Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, plaintext: str) -> str:
        """The ciphertext of `plaintext`; the empty string stays empty."""
        if not plaintext:
            return ""
        return self._fernet().encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext; the empty string stays empty; InvalidToken when the key changed."""
        if not ciphertext:
            return ""
        return self._fernet().decrypt(ciphertext.encode()).decode()
