"""Random bearer tokens: generated once, stored as a hash with a lookup prefix.

A token reads `swm_<prefix>_<secret>`. The prefix (8 hex chars) is stored in
clear so a lookup is an index hit; the whole token is stored only as its
sha256, which is enough for 160 bits of randomness (no slow KDF needed), and
compared in constant time.
"""
import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_PREFIX_LENGTH = 8


@dataclass(frozen=True)
class GeneratedToken:
    """A freshly generated token: `plaintext` is shown once, the rest is stored."""

    plaintext: str
    prefix: str
    digest: str


def generate_token(kind: str = "swm") -> GeneratedToken:
    """Return a new random token with its lookup prefix and digest."""
    prefix = secrets.token_hex(TOKEN_PREFIX_LENGTH // 2)
    plaintext = f"{kind}_{prefix}_{secrets.token_urlsafe(30)}"
    return GeneratedToken(plaintext=plaintext, prefix=prefix, digest=token_digest(plaintext))


def token_digest(plaintext: str) -> str:
    """The sha256 hex digest under which a token is stored."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def split_prefix(plaintext: str) -> str | None:
    """Extract the lookup prefix from a presented token, or None when malformed."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or len(parts[1]) != TOKEN_PREFIX_LENGTH:
        return None
    return parts[1]


def digests_match(plaintext: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented token against a stored digest."""
    return hmac.compare_digest(token_digest(plaintext), stored_digest)
