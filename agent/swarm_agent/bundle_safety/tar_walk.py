"""A tar header walker over an uncompressed stream pushed in pieces (names derived as tarfile derives them)."""
from __future__ import annotations

import re
import zlib

from swarm_agent.bundle_safety.limits import BundleRejected, MemberBudget

#: GNU long names and pax headers larger than this are refused (tarfile has no limit at all).
MAX_EXTENSION_HEADER_BYTES = 1024 * 1024

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_REGULAR_TYPES = frozenset(b"07\0")  # regular, contiguous, old-style regular
_DIRECTORY = ord("5")
_SYMLINK, _HARDLINK = ord("2"), ord("1")
_CHAR_DEVICE, _BLOCK_DEVICE, _FIFO = ord("3"), ord("4"), ord("6")
_GNU_LONGNAME, _GNU_LONGLINK, _GNU_SPARSE = ord("L"), ord("K"), ord("S")
_PAX_TYPES = frozenset(b"xX")
_PAX_GLOBAL = ord("g")
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")


def _text(field: bytes) -> str:
    end = field.find(0)
    if end >= 0:
        field = field[:end]
    return field.decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A tar numeric field: octal text, or GNU base-256 (as tarfile's `nti`)."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0o377:
            value -= 256 ** (len(field) - 1)
        return value
    try:
        return int(field.split(b"\0", 1)[0] or b"0", 8)  # int() strips the spaces itself
    except ValueError:
        raise BundleRejected("not_a_tar_gz", "not a valid tar archive: a header field is not a number") from None


def _checksum_ok(block: bytes) -> bool:
    """tarfile's header checksum test (unsigned or signed byte sum, the checksum field read as spaces).

    The unsigned sum comes from adler32, whose low half is 1 + the byte sum
    modulo 65521 (a 512-byte sum is below 2 × 65521), because `sum()` over the
    bytes was the largest cost of walking a bundle of many small members.
    """
    stored = _number(block[148:156])
    field_sum = sum(block[148:156])
    byte_sum_mod = ((zlib.adler32(block) & 0xFFFF) - 1) % 65521
    if (stored + field_sum - 8 * 32 - byte_sum_mod) % 65521 == 0:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block) - sum(
        b - 256 if b > 127 else b for b in block[148:156]) + 8 * 32
    return stored == signed


_KINDS = {ord("0"): "file", ord("7"): "file", 0: "file", _DIRECTORY: "dir", _SYMLINK: "symlink",
          _HARDLINK: "hardlink", _CHAR_DEVICE: "chardev", _BLOCK_DEVICE: "blockdev", _FIFO: "fifo",
          _GNU_SPARSE: "sparse"}


class TarHeaderWalker:
    """Walks the tar headers of an uncompressed stream pushed in pieces, skipping member data by counting.

    Names are derived exactly as tarfile derives them (ustar prefix, GNU long
    names and links, pax `path`/`linkpath`/`size`, global pax headers), so the
    check sees what the agent's extraction will see.
    """

    def __init__(self, budget: MemberBudget):
        self.budget = budget
        self.ended = False
        self._header = bytearray()
        self._skip = 0
        self._extension: bytearray | None = None
        self._extension_type = 0
        self._extension_left = 0
        self._extension_padding = 0
        self._member_overrides: dict[str, str] = {}
        self._global_overrides: dict[str, str] = {}
        self.at_boundary = True  # between members: the stream may end here

    def push(self, piece) -> None:
        """Consume the next piece of the uncompressed tar stream."""
        view = memoryview(piece)
        position, size = 0, len(view)
        while position < size and not self.ended:
            if self._skip:
                step = min(self._skip, size - position)
                self._skip -= step
                position += step
                if not self._skip and self._extension is None:
                    self.at_boundary = True
                continue
            if self._extension is not None:
                step = min(self._extension_left, size - position)
                self._extension += view[position:position + step]
                self._extension_left -= step
                position += step
                if not self._extension_left:
                    self._finish_extension()
                continue
            if not self._header and size - position >= _BLOCK:
                block = view[position:position + _BLOCK]
                position += _BLOCK
            else:
                step = min(_BLOCK - len(self._header), size - position)
                self._header += view[position:position + step]
                position += step
                self.at_boundary = False
                if len(self._header) < _BLOCK:
                    continue
                block = memoryview(bytes(self._header))
                self._header.clear()
            self._on_header(block)

    def _on_header(self, view) -> None:
        block = bytes(view)
        if block == _ZERO_BLOCK:
            # tarfile ends the archive at the first zero block; so do we (what follows is never unpacked).
            self.ended = True
            self.at_boundary = True
            return
        if not _checksum_ok(block):
            raise BundleRejected("not_a_tar_gz", "not a valid tar archive: a header's checksum is wrong")
        kind_byte = block[156]
        size = _number(block[124:136])
        if size < 0:
            raise BundleRejected("not_a_tar_gz", "not a valid tar archive: a member has a negative size")
        if kind_byte in (_GNU_LONGNAME, _GNU_LONGLINK) or kind_byte in _PAX_TYPES or kind_byte == _PAX_GLOBAL:
            if size > MAX_EXTENSION_HEADER_BYTES:
                raise BundleRejected("not_a_tar_gz", f"a long-name or pax header of {size} bytes is larger than "
                                                     f"the {MAX_EXTENSION_HEADER_BYTES} bytes allowed")
            self._extension = bytearray()
            self._extension_type = kind_byte
            self._extension_left = size
            self._extension_padding = -size % _BLOCK
            self.at_boundary = False
            if not size:
                self._finish_extension()
            return
        name = _text(block[0:100])
        linkname = _text(block[157:257])
        mode = _number(block[100:108])
        prefix = _text(block[345:500])
        kind = _KINDS.get(kind_byte, chr(kind_byte))
        if kind_byte == 0 and name.endswith("/"):
            kind = "dir"
        if kind == "dir":
            name = name.rstrip("/")
        if prefix:
            name = prefix + "/" + name
        if self._member_overrides or self._global_overrides:
            overrides = {**self._global_overrides, **self._member_overrides}
            self._member_overrides = {}
            name = overrides.get("path", name)
            linkname = overrides.get("linkpath", linkname)
            if "size" in overrides:
                size = _pax_size(overrides["size"])
            if any(key.startswith("GNU.sparse.") for key in overrides):
                kind = "sparse"
        self.budget.admit_entry(name=name, linkname=linkname, mode=mode, kind=kind, size=size)
        # tarfile skips data for regular files only (other kinds were refused above or carry none).
        self._skip = size + (-size % _BLOCK) if kind == "file" else 0
        self.at_boundary = not self._skip

    def _finish_extension(self) -> None:
        data = bytes(self._extension)
        kind_byte = self._extension_type
        self._extension = None
        self._skip = self._extension_padding
        if kind_byte == _GNU_LONGNAME:
            self._member_overrides["path"] = _text(data)
        elif kind_byte == _GNU_LONGLINK:
            self._member_overrides["linkpath"] = _text(data)
        else:
            records = _pax_records(data)
            (self._global_overrides if kind_byte == _PAX_GLOBAL else self._member_overrides).update(records)


def _pax_size(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise BundleRejected("not_a_tar_gz", f"not a valid tar archive: pax size {value!r} is not a number")
    return int(value)


def _pax_records(data: bytes) -> dict[str, str]:
    """The `length key=value\\n` records of a pax header (values as tarfile decodes them)."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data) and data[position] != 0:
        match = _PAX_RECORD.match(data, position)
        if match is None:
            raise BundleRejected("not_a_tar_gz", "not a valid tar archive: a pax header is malformed")
        length = int(match.group(1))
        end = position + length
        if length < len(match.group(0)) + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise BundleRejected("not_a_tar_gz", "not a valid tar archive: a pax record has a wrong length")
        key = match.group(2).decode("utf-8", "surrogateescape")
        records[key] = data[match.end():end - 1].decode("utf-8", "surrogateescape")
        position = end
    return records
