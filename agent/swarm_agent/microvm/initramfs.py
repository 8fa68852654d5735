"""The guest's initramfs: a static busybox, the kernel modules the root disk needs, and a tiny /init.

Debian's kernel builds virtio, ext4, 9p and fw_cfg as modules, so something
must load them before the root filesystem can be mounted. Debian's own
initramfs (udev, klibc, scripts) costs seconds of emulated boot; this one is
about 6 MB, uncompressed: `/init` loads the modules in dependency order (read from
each module's `.modinfo` section, so no `depmod` is needed on the build
host), mounts the root disk read-write and switches to `/sbin/swarm-init`.
With `swarm.probe=1` on the kernel command line it only prints a marker and
powers off: the accelerator probe (`vm.probe_accelerator`).
"""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path

#: What the guest needs, in no particular order (dependencies are added).
GUEST_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_rng",
    "ext4", "crc32c_generic", "9p", "9pnet_virtio", "qemu_fw_cfg",
)
PROBE_MARKER = "SWARM-PROBE-OK"

INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for module in $(/bin/busybox cat /modules/order); do
  /bin/busybox insmod /modules/$module 2>/dev/null
done
if /bin/busybox grep -q swarm.probe=1 /proc/cmdline; then
  echo "%(marker)s"
  /bin/busybox reboot -f
fi
n=0
while [ ! -b /dev/vda ] && [ $n -lt 200 ]; do /bin/busybox usleep 20000; n=$((n+1)); done
/bin/busybox mount -t ext4 -o rw,noatime /dev/vda /root || { echo "swarm-initramfs: cannot mount /dev/vda"; /bin/busybox reboot -f; }
/bin/busybox umount /proc /sys
/bin/busybox mount --move /dev /root/dev
exec /bin/busybox switch_root /root /sbin/swarm-init
""" % {"marker": PROBE_MARKER}


def _modinfo(path: Path) -> dict[str, str]:
    """Key=value pairs of an ELF64 kernel module's `.modinfo` section."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{path} is not an ELF64 file")
    section_offset, = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    names = sections[names_index]
    info = {}
    for section in sections:
        name_start = names[4] + section[0]
        name = data[name_start:data.index(b"\0", name_start)]
        if name == b".modinfo":
            raw = data[section[4]:section[4] + section[5]]
            for item in raw.split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
    return info


def module_closure(modules_dir: Path, wanted=GUEST_MODULES) -> list[Path]:
    """The .ko files for `wanted` and everything they depend on, dependencies first."""
    by_name = {}
    for path in modules_dir.rglob("*.ko"):
        by_name[path.stem.replace("-", "_")] = path
    ordered: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        path = by_name.get(name)
        if path is None:  # built into the kernel
            return
        for dependency in filter(None, _modinfo(path).get("depends", "").split(",")):
            visit(dependency)
        ordered.append(path)

    for name in wanted:
        visit(name)
    return ordered


class _Cpio:
    """A minimal `newc` cpio writer (what the kernel unpacks as an initramfs)."""

    def __init__(self):
        self.buffer = io.BytesIO()
        self.inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        header = b"070701" + b"".join(b"%08X" % value for value in (
            self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0))
        self.inode += 1
        self.buffer.write(header + encoded)
        self.buffer.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self.buffer.write(data)
        self.buffer.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def close(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buffer.getvalue()


def build_initramfs(*, busybox: Path, modules_dir: Path, destination: Path) -> list[str]:
    """Write an uncompressed cpio initramfs to `destination`; returns the module file names in load order.

    Uncompressed on purpose: inflating it under emulation (TCG) cost the guest a second or more of boot,
    copying 6 MB more into guest memory costs QEMU next to nothing.
    """
    modules = module_closure(modules_dir)
    archive = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "root", "modules"):
        archive.directory(directory)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", INIT_SCRIPT.encode(), 0o755)
    names = []
    for path in modules:
        archive.file(f"modules/{path.name}", path.read_bytes())
        names.append(path.name)
    archive.file("modules/order", ("\n".join(names) + "\n").encode())
    part = destination.with_suffix(".part")
    with open(part, "wb") as output:
        output.write(archive.close())
    os.replace(part, destination)
    return names
