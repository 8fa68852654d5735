"""Build the microVM image — guest kernel, initramfs, root filesystem — from distribution packages.

Nothing is downloaded prebuilt: the root filesystem is `mmdebstrap`'d from
the host's Debian mirror (essential packages + python3, python3-filelock,
ca-certificates, busybox-static), the kernel is the `linux-image-amd64`
package's image (fetched with `apt-get download`, unpacked with `dpkg-deb`),
and the `swarm_agent` package is copied in from this checkout. Layers, each
cached by a content hash of its inputs:

* `base/<hash>.tar` — the mmdebstrap output; its hash covers the suite, the
  package list and the dpkg filters (~45 s to build, rarely changes);
* `<key>/` — the image itself: `vmlinux` (the kernel, decompressed once here
  so QEMU boots it directly through its PVH entry point: no firmware, no
  decompression under emulation), `initrd.img` (see `initramfs.py`),
  `rootfs.img` (sparse raw ext4, the backing file of every VM's
  copy-on-write overlay) and `manifest.json`. The key hashes the base's hash
  and every file of the agent package, so a change to the agent rebuilds only
  this layer (a few seconds).

Executions never write to these files: each VM gets a qcow2 overlay backed by
`rootfs.img` (`vm.create_overlay`). Building needs root (mmdebstrap's chroot,
file ownership).
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import swarm_agent
from swarm_agent.microvm.initramfs import build_initramfs

SUITE = "bookworm"
PACKAGES = ("python3", "python3-filelock", "ca-certificates", "busybox-static")
KERNEL_METAPACKAGE = "linux-image-amd64"
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*", "path-include=/usr/share/doc/*/copyright",
)
#: Free space the root filesystem keeps for the workflow (its whole disk: the overlay never grows past it).
DISK_FREE_MB = 512
GUEST_USER = ("swarm", 1000)
IMAGE_FILES = ("vmlinux", "initrd.img", "rootfs.img", "manifest.json")
#: Bump when the build steps change in a way the hashed inputs do not show.
RECIPE_VERSION = 1


class ImageBuildError(Exception):
    """The image could not be built (missing tool, not root, a failed step)."""


@dataclass(frozen=True)
class Image:
    """A built image: where its files are, and what it was built from."""

    directory: Path
    manifest: dict

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.img"


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


def agent_source_dir() -> Path:
    """The `swarm_agent` package directory copied into the image."""
    return Path(swarm_agent.__file__).resolve().parent


def _agent_files() -> list[Path]:
    root = agent_source_dir()
    return sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def base_key() -> str:
    """Hash of what the mmdebstrap layer is made from."""
    return _digest(str(RECIPE_VERSION), SUITE, *PACKAGES, *DPKG_OPTIONS)[:16]


def image_key() -> str:
    """Hash of every input of the image: the base layer, the kernel choice and every agent file."""
    root = agent_source_dir()
    parts = [base_key(), KERNEL_METAPACKAGE, str(DISK_FREE_MB), repr(GUEST_USER)]
    for path in _agent_files():
        parts += [str(path.relative_to(root)), path.read_bytes()]
    return _digest(*parts)[:16]


def find_image(image_root: str | os.PathLike) -> Image | None:
    """The built image for the current inputs under `image_root`, or None."""
    directory = Path(image_root) / image_key()
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((directory / name).exists() for name in IMAGE_FILES):
        return None
    return Image(directory=directory, manifest=manifest)


def _run(argv: list[str], *, log, **kwargs) -> subprocess.CompletedProcess:
    log(f"$ {' '.join(argv)}")
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{argv[0]} is not installed (scripts/system-deps.sh installs it)") from exc
    except subprocess.CalledProcessError as exc:
        raise ImageBuildError(f"{argv[0]} failed ({exc.returncode}): {(exc.stderr or exc.stdout)[-2000:]}") from exc


def build_base(image_root: str | os.PathLike, *, log=print) -> Path:
    """The root file system tarball the image is made from, built once (cached by `base_key()`): a plain Debian
    root, shared with the container executor's tests, which import it as a container image."""
    return _build_base(Path(image_root), log)


def _build_base(image_root: Path, log) -> Path:
    """The mmdebstrap tarball (cached by `base_key()`)."""
    base = image_root / "base" / f"{base_key()}.tar"
    if base.exists():
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    part = base.with_name(f".{base.name}.{os.getpid()}.part")
    argv = ["mmdebstrap", "--variant=essential", "--quiet", f"--include={','.join(PACKAGES)}", "--format=tar"]
    argv += [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
    _run(argv + [SUITE, str(part)], log=log)
    os.replace(part, base)
    return base


def _fetch_kernel(image_root: Path, workdir: Path, log) -> tuple[Path, str]:
    """Download the kernel package into `image_root/debs` and unpack it under `workdir`; (tree, package)."""
    depends = _run(["apt-cache", "depends", KERNEL_METAPACKAGE], log=log).stdout
    package = next((line.split(":", 1)[1].strip() for line in depends.splitlines()
                    if line.strip().startswith("Depends:") and "linux-image-" in line), None)
    if package is None:
        raise ImageBuildError(f"apt-cache knows no kernel behind {KERNEL_METAPACKAGE} (run apt-get update)")
    debs = image_root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        _run(["apt-get", "download", "-q", package], log=log, cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise ImageBuildError(f"apt-get download {package} produced no .deb")
    tree = workdir / "kernel"
    _run(["dpkg-deb", "-x", str(found[-1]), str(tree)], log=log)
    return tree, found[-1].name


def extract_vmlinux(bzimage: Path, destination: Path) -> None:
    """The uncompressed kernel ELF inside a bzImage (xz payload), which QEMU boots through PVH."""
    data = bzimage.read_bytes()
    setup_sectors = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    payload = data[start:start + length]
    if not payload.startswith(b"\xfd7zXZ\x00"):
        raise ImageBuildError(f"{bzimage.name}: the kernel payload is not xz-compressed")
    destination.write_bytes(lzma.LZMADecompressor().decompress(payload))


def _install_agent(root: Path, log) -> None:
    """Copy `swarm_agent` into the guest's dist-packages, compile it, add the init and the user."""
    target = root / "usr/lib/python3/dist-packages/swarm_agent"
    shutil.copytree(agent_source_dir(), target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run(["chroot", str(root), "python3", "-m", "compileall", "-q", "/usr/lib/python3/dist-packages/swarm_agent"],
         log=log)
    init = root / "sbin/swarm-init"
    init.write_text("#!/usr/bin/python3 -I\nfrom swarm_agent.microvm.guest_init import main\n\nmain()\n")
    init.chmod(0o755)
    name, uid = GUEST_USER
    with open(root / "etc/passwd", "a") as passwd:
        passwd.write(f"{name}:x:{uid}:{uid}:workflow:/opt/workflow:/usr/sbin/nologin\n")
    with open(root / "etc/group", "a") as group:
        group.write(f"{name}:x:{uid}:\n")
    for directory in ("opt/workflow", "var/cache/swarm", "var/cache/swarm-host", "run", "tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)


def _directory_bytes(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def build_image(image_root: str | os.PathLike, *, force: bool = False, log=print) -> Image:
    """Build (or find) the image for the current inputs under `image_root`; returns it."""
    if os.geteuid() != 0:
        raise ImageBuildError("building the microVM image needs root (mmdebstrap, chroot, file ownership)")
    image_root = Path(image_root)
    image_root.mkdir(parents=True, exist_ok=True)
    existing = find_image(image_root)
    if existing is not None and not force:
        return existing
    key = image_key()
    started = time.monotonic()
    base = _build_base(image_root, log)
    with tempfile.TemporaryDirectory(dir=image_root, prefix=f".build-{key}-") as scratch:
        scratch = Path(scratch)
        output = scratch / "image"
        output.mkdir()
        kernel_tree, kernel_package = _fetch_kernel(image_root, scratch, log)
        bzimage = next((kernel_tree / "boot").glob("vmlinuz-*"))
        extract_vmlinux(bzimage, output / "vmlinux")
        root = scratch / "root"
        root.mkdir()
        log(f"unpacking {base.name}")
        with tarfile.open(base) as archive:
            archive.extractall(root, filter="fully_trusted")  # our own mmdebstrap output, owners kept
        _install_agent(root, log)
        modules = build_initramfs(busybox=root / "bin/busybox", modules_dir=kernel_tree / "lib/modules",
                                  destination=output / "initrd.img")
        size_mb = int(_directory_bytes(root) * 1.25 / 1048576) + DISK_FREE_MB
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "swarm-root", "-d", str(root),
              str(output / "rootfs.img"), f"{size_mb}M"], log=log)
        manifest = {
            "key": key, "base": base.name, "suite": SUITE, "packages": list(PACKAGES),
            "kernel_package": kernel_package, "kernel_release": bzimage.name.removeprefix("vmlinuz-"),
            "modules": modules, "disk_mb": size_mb, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (output / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        final = image_root / key
        if final.exists():
            shutil.rmtree(final)
        os.replace(output, final)
    _remove_stale_images(image_root, keep=key)
    log(f"microVM image {key} built in {manifest['build_seconds']} s")
    return find_image(image_root)


def _remove_stale_images(image_root: Path, *, keep: str) -> None:
    """Drop images of older inputs (running VMs keep their backing file open, so this is safe for them)."""
    for candidate in image_root.iterdir():
        if candidate.is_dir() and candidate.name != keep and (candidate / "manifest.json").exists():
            shutil.rmtree(candidate, ignore_errors=True)
