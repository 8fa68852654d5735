"""The bundle rules every member must keep, the limits, and the budget that counts members against them."""
from __future__ import annotations

import posixpath
import stat
import tarfile
from dataclasses import dataclass


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
