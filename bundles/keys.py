"""Storage keys of content-addressed blobs."""
import re

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
BLOB_PREFIX = "bundles/sha256/"
INCOMING_PREFIX = "bundles/incoming/"


def is_sha256_hex(value: str) -> bool:
    """Whether `value` is a lowercase 64-character sha256 hex digest."""
    return bool(SHA256_HEX.match(value or ""))


def blob_key(sha256: str) -> str:
    """`bundles/sha256/<aa>/<hex>.tar.gz` for a sha256 hex digest."""
    if not is_sha256_hex(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{BLOB_PREFIX}{sha256[:2]}/{sha256}.tar.gz"


def sha256_from_key(key: str) -> str | None:
    """The digest a blob key names, or None for keys outside the blob layout."""
    match = re.match(r"^bundles/sha256/([0-9a-f]{2})/([0-9a-f]{64})\.tar\.gz$", key)
    if not match or match.group(2)[:2] != match.group(1):
        return None
    return match.group(2)
