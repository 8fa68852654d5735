"""Safety rules for bundle tarballs, shared by the server (upload) and the agent (unpack).

A bundle must be a gzip-compressed tar whose members all stay inside the
unpack root: no absolute paths, no `..`, no links leaving the root, no device
files or fifos, no setuid/setgid bits, at most a configured number of members
and unpacked bytes, and no more than a configured unpacked/compressed ratio
once past a small floor (so a tar or decompression bomb is refused before it
is unpacked, and as soon as it crosses a limit).

`BundleInspector` checks a stream pushed to it chunk by chunk, in time linear
in the unpacked size and in memory bounded by `INFLATE_STEP_BYTES`: it
inflates with `zlib` in fixed steps and walks the tar headers itself, skipping
member data by counting (tarfile's stream reader re-copies its whole
decompressed buffer on every read, which made inspection quadratic).
`InflatingReader` gives tarfile (the agent's unpack) the same bounded,
bomb-checked inflation.
"""
from __future__ import annotations

import posixpath
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass

#: Read size for callers that pull a bundle through tarfile (unpack, catalog import).
STREAM_BUFFER_SIZE = 1024 * 1024
#: At most this many decompressed bytes are produced per zlib call, whatever the input.
INFLATE_STEP_BYTES = 256 * 1024
#: tarfile's stream buffer over an `InflatingReader`: tarfile re-copies the rest of this buffer on every
#: header read, so it stays small (its own default is 10 KiB).
TAR_STREAM_BUFFER_SIZE = 16 * 1024
#: GNU long names and pax headers larger than this are refused (tarfile has no limit at all).
MAX_EXTENSION_HEADER_BYTES = 1024 * 1024

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_GZIP_MAGIC = b"\x1f\x8b"
_REGULAR_TYPES = frozenset(b"07\0")  # regular, contiguous, old-style regular
_DIRECTORY = ord("5")
_SYMLINK, _HARDLINK = ord("2"), ord("1")
_CHAR_DEVICE, _BLOCK_DEVICE, _FIFO = ord("3"), ord("4"), ord("6")
_GNU_LONGNAME, _GNU_LONGLINK, _GNU_SPARSE = ord("L"), ord("K"), ord("S")
_PAX_TYPES = frozenset(b"xX")
_PAX_GLOBAL = ord("g")
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")


class BundleRejected(Exception):
    """The bundle breaks a safety rule. `code` names the rule."""

    def __init__(self, code: str, detail: str, status: int = 400):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class BundleLimits:
    """Configurable limits against tar and decompression bombs."""

    max_members: int = 20_000
    max_unpacked_bytes: int = 8 * 1024**3
    #: Refuse when unpacked bytes exceed this many times the compressed bytes read so far...
    max_ratio: int = 200
    #: ...once more than this many bytes have been unpacked (small bundles compress as they like).
    ratio_floor_bytes: int = 64 * 1024**2


@dataclass(frozen=True)
class BundleSummary:
    """What an accepted bundle contains."""

    member_count: int
    unpacked_size: int


def _is_outside_root(path: str) -> bool:
    normalised = posixpath.normpath(path)
    return normalised == ".." or normalised.startswith("../") or normalised.startswith("/")


def check_entry(*, name: str, linkname: str, mode: int, kind: str) -> None:
    """Raise `BundleRejected` when one entry breaks a rule.

    `kind` is one of file, dir, symlink, hardlink, chardev, blockdev, fifo, or
    anything else for an unsupported type (named in the refusal).
    """
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BundleRejected("absolute_path", f"member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise BundleRejected("path_traversal", f"member {name!r} contains '..'")
    if kind in ("chardev", "blockdev"):
        raise BundleRejected("device_file", f"member {name!r} is a device file")
    if kind == "fifo":
        raise BundleRejected("fifo", f"member {name!r} is a fifo")
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise BundleRejected("setuid_bit", f"member {name!r} has the setuid or setgid bit set")
    if kind == "symlink":
        if linkname.startswith("/"):
            raise BundleRejected("link_escapes_root", f"symlink {name!r} points to absolute path {linkname!r}")
        if _is_outside_root(posixpath.join(posixpath.dirname(name), linkname)):
            raise BundleRejected("link_escapes_root", f"symlink {name!r} -> {linkname!r} leaves the bundle root")
    elif kind == "hardlink":
        if linkname.startswith("/") or _is_outside_root(linkname):
            raise BundleRejected("link_escapes_root", f"hardlink {name!r} -> {linkname!r} leaves the bundle root")
    elif kind not in ("file", "dir"):
        raise BundleRejected("special_file", f"member {name!r} has an unsupported type {kind!r}")


def _tarinfo_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr():
        return "chardev"
    if member.isblk():
        return "blockdev"
    if member.isfifo():
        return "fifo"
    if member.issparse():
        return "sparse"
    if member.isfile():
        return "file"
    if member.isdir():
        return "dir"
    return member.type.decode("latin-1", "replace")


def check_member(member: tarfile.TarInfo) -> None:
    """Raise `BundleRejected` when one tarfile member breaks a rule."""
    check_entry(name=member.name, linkname=member.linkname, mode=member.mode, kind=_tarinfo_kind(member))


class MemberBudget:
    """Counts members against the tar-bomb limits and checks each one."""

    def __init__(self, limits: BundleLimits):
        self.limits = limits
        self.members = 0
        self.unpacked = 0

    def admit_entry(self, *, name: str, linkname: str, mode: int, kind: str, size: int) -> None:
        """Raise `BundleRejected` when an entry breaks a rule or a limit; count it otherwise."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise BundleRejected(
                "too_many_members",
                f"the bundle has more than {self.limits.max_members} members (SWARM_BUNDLE_MAX_MEMBERS)",
            )
        check_entry(name=name, linkname=linkname, mode=mode, kind=kind)
        if kind == "file":
            self.unpacked += size
            if self.unpacked > self.limits.max_unpacked_bytes:
                raise BundleRejected(
                    "too_large_unpacked",
                    f"the bundle unpacks to more than {self.limits.max_unpacked_bytes} bytes "
                    f"(SWARM_BUNDLE_MAX_UNPACKED_BYTES)",
                )

    def admit(self, member: tarfile.TarInfo) -> None:
        """`admit_entry` for a tarfile member (the agent's unpack)."""
        self.admit_entry(name=member.name, linkname=member.linkname, mode=member.mode,
                         kind=_tarinfo_kind(member), size=member.size)


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


class BundleInspector:
    """Inspect a bundle pushed chunk by chunk: `feed()` each chunk, then `finish()`.

    Work is done in `feed()`, on the caller's thread, in time linear in the
    unpacked bytes; the first broken rule raises `BundleRejected` from the
    `feed()` that found it (and again from every later call), so a caller can
    stop reading at once. `abandon()` makes later calls no-ops.
    """

    def __init__(self, limits: BundleLimits):
        self._limits = limits
        self._inflater = Inflater(limits)
        self._budget = MemberBudget(limits)
        self._walker = TarHeaderWalker(self._budget)
        self._error: BundleRejected | None = None
        self._abandoned = False

    @property
    def failed(self) -> BundleRejected | None:
        """The refusal found so far, if any."""
        return self._error

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk of the compressed stream (raises `BundleRejected` at the first broken rule)."""
        if self._error is not None:
            raise self._error
        if self._abandoned:
            return
        try:
            for piece in self._inflater.inflate(chunk):
                if self._abandoned:
                    return
                if not self._walker.ended:
                    self._walker.push(piece)
        except BundleRejected as rejected:
            self._error = rejected
            raise

    def finish(self) -> BundleSummary:
        """The summary of a complete stream, or `BundleRejected`."""
        if self._error is not None:
            raise self._error
        try:
            if self._inflater.compressed == 0:
                raise BundleRejected("not_a_tar_gz", "not a valid gzip-compressed tar archive: the bundle is empty")
            if not self._inflater.ended:
                raise BundleRejected("not_a_tar_gz", "not a valid gzip-compressed tar archive: the gzip stream "
                                                     "is truncated")
            if not (self._walker.ended or self._walker.at_boundary):
                raise BundleRejected("not_a_tar_gz", "not a valid tar archive: it ends inside a member")
            if self._budget.members == 0:
                raise BundleRejected("empty_bundle", "the bundle contains no files")
        except BundleRejected as rejected:
            self._error = rejected
            raise
        return BundleSummary(member_count=self._budget.members, unpacked_size=self._budget.unpacked)

    def abandon(self) -> None:
        """Stop inspecting (the upload failed for another reason)."""
        self._abandoned = True


def check_tar_stream(fileobj, limits: BundleLimits, *, chunk_size: int = STREAM_BUFFER_SIZE) -> BundleSummary:
    """Read a whole tar.gz stream from `fileobj` and check every member."""
    inspector = BundleInspector(limits)
    while True:
        chunk = fileobj.read(chunk_size)
        if not chunk:
            return inspector.finish()
        inspector.feed(chunk)


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
