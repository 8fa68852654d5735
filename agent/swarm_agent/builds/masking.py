"""Secret masking for build output: every secret value becomes `[MASKED]` before it is logged."""
from __future__ import annotations

MASK = b"[MASKED]"
#: Values shorter than this are not masked (masking "1" would garble every log).
MIN_SECRET_LENGTH = 4


class SecretMasker:
    """Replaces secret values in byte strings; longest values first so overlaps mask fully."""

    def __init__(self, secrets):
        values = {str(value).encode() for value in secrets if value and len(str(value)) >= MIN_SECRET_LENGTH}
        self._values = sorted(values, key=len, reverse=True)

    @property
    def longest(self) -> int:
        """Length of the longest secret (the carry a stream masker must hold back)."""
        return len(self._values[0]) if self._values else 0

    def mask(self, data: bytes) -> bytes:
        """`data` with every secret value replaced."""
        for value in self._values:
            if value in data:
                data = data.replace(value, MASK)
        return data
