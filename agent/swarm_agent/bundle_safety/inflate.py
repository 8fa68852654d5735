"""Bounded, ratio-checked gzip inflation: `Inflater` for pushed chunks, `InflatingReader` for tarfile."""
from __future__ import annotations

import zlib

from swarm_agent.bundle_safety.limits import BundleLimits, BundleRejected

#: Read size for callers that pull a bundle through tarfile (unpack, catalog import).
STREAM_BUFFER_SIZE = 1024 * 1024
#: At most this many decompressed bytes are produced per zlib call, whatever the input.
INFLATE_STEP_BYTES = 256 * 1024
#: tarfile's stream buffer over an `InflatingReader`: tarfile re-copies the rest of this buffer on every
#: header read, so it stays small (its own default is 10 KiB).
TAR_STREAM_BUFFER_SIZE = 16 * 1024

_GZIP_MAGIC = b"\x1f\x8b"


class Inflater:
    """Inflates a gzip stream in bounded steps and refuses a decompression bomb as soon as it is one.

    Concatenated gzip members are inflated in turn (as `gzip -d` does);
    `compressed` counts the input bytes consumed, `unpacked` the output.
    """

    def __init__(self, limits: BundleLimits):
        self.limits = limits
        self.compressed = 0
        self.unpacked = 0
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._member_ended = False
        self.trailing_garbage = False

    @property
    def ended(self) -> bool:
        """Whether the last gzip member seen so far is complete (its CRC and length checked)."""
        return self._member_ended

    def inflate(self, data: bytes):
        """Yield the decompressed bytes of `data`, at most `INFLATE_STEP_BYTES` at a time."""
        pending = data
        while pending:
            if self._member_ended:
                if not pending.startswith(_GZIP_MAGIC):
                    self.trailing_garbage = True  # ignored, like tarfile and gzip -d do
                    return
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._member_ended = False
            try:
                out = self._inflate.decompress(pending, INFLATE_STEP_BYTES)
            except zlib.error as exc:
                raise BundleRejected("not_a_tar_gz", f"not a valid gzip stream: {exc}") from None
            if self._inflate.eof:
                rest = self._inflate.unused_data
                self._member_ended = True
            else:
                rest = self._inflate.unconsumed_tail
            self.compressed += len(pending) - len(rest)
            pending = rest
            if out:
                self.unpacked += len(out)
                self._check_ratio()
                yield out

    def _check_ratio(self) -> None:
        limits = self.limits
        if self.unpacked > limits.ratio_floor_bytes and self.unpacked > limits.max_ratio * max(self.compressed, 1):
            raise BundleRejected(
                "decompression_bomb",
                f"the bundle unpacked to {self.unpacked} bytes from {self.compressed} compressed bytes, a ratio "
                f"of {self.unpacked // max(self.compressed, 1)}:1; the limit is {limits.max_ratio}:1 past "
                f"{limits.ratio_floor_bytes} unpacked bytes (SWARM_BUNDLE_MAX_RATIO, SWARM_BUNDLE_RATIO_FLOOR_BYTES)",
            )


class InflatingReader:
    """A file-like view of the uncompressed tar inside a gzip file, for `tarfile.open(mode="r|")`.

    Inflation is bounded per read and checked against the ratio limit, so
    tarfile (which would otherwise inflate a whole read at once and re-copy
    its buffer) stays linear and a bomb stops at the limit.
    """

    def __init__(self, fileobj, limits: BundleLimits, *, chunk_size: int = STREAM_BUFFER_SIZE):
        self._fileobj = fileobj
        self._inflater = Inflater(limits)
        self._chunk_size = chunk_size
        self._pieces = None
        self._buffer = b""
        self._offset = 0
        self._eof = False

    def _next_piece(self) -> bytes:
        while True:
            if self._pieces is not None:
                piece = next(self._pieces, None)
                if piece is not None:
                    return piece
                self._pieces = None
            if self._eof:
                return b""
            chunk = self._fileobj.read(self._chunk_size)
            if not chunk:
                self._eof = True
                if not self._inflater.ended:
                    raise BundleRejected("not_a_tar_gz", "not a valid gzip-compressed tar archive: the gzip "
                                                         "stream is truncated")
                return b""
            self._pieces = self._inflater.inflate(chunk)

    def read(self, size: int = -1) -> bytes:
        """Up to `size` uncompressed bytes (tarfile asks for at most its bufsize)."""
        if size is None or size < 0:
            parts = [self._buffer[self._offset:]]
            self._buffer, self._offset = b"", 0
            while piece := self._next_piece():
                parts.append(piece)
            return b"".join(parts)
        if self._offset >= len(self._buffer):
            self._buffer, self._offset = self._next_piece(), 0
        taken = self._buffer[self._offset:self._offset + size]
        self._offset += len(taken)
        return taken
