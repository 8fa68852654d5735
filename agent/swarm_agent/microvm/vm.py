"""Launch one execution's QEMU virtual machine, and probe whether KVM really works on this host.

The VM (`qemu_argv`) is a q35 machine without firmware work: QEMU loads the
uncompressed kernel through its PVH entry point, the initramfs mounts the
VM's own copy-on-write overlay of the image's root filesystem
(`create_overlay`), and the guest init takes its orders from fw_cfg. RAM and
CPUs are the execution's. Its one network card is QEMU's user-mode network
with `restrict=on` — the guest can reach neither the host nor anything
beyond — plus one `guestfwd` rule per allowed endpoint: a connection to
`10.0.2.100:<10000+i>` inside the guest becomes, on the host, `socat`
connecting to endpoint i (the control plane, the bundle store) and nothing
else. The host's bundle cache can be shared read-only over 9p.

KVM is used only when a real probe boot (`probe_accelerator`) reaches the
initramfs within a timeout: on some hosts `/dev/kvm` opens and the guest
then hangs right after real-mode setup (nested virtualisation that does not
work). The verdict is cached per host in a file keyed by the QEMU version
and the image; TCG (software emulation) is used otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from swarm_agent.microvm.image import Image
from swarm_agent.microvm.initramfs import PROBE_MARKER

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
FORWARD_ADDRESS = "10.0.2.100"
FORWARD_BASE_PORT = 10000
SHARED_CACHE_TAG = "swarmcache"
KERNEL_ARGS = ("console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off i8042.noaux i8042.nokbd i8042.nopnp "
               "tsc=reliable no_timer_check random.trust_cpu=on")
PROBE_TIMEOUT_SECONDS = 20.0
ACCELERATORS = ("kvm", "tcg")
#: What an endpoint host may look like: it ends up in the shell command QEMU runs per connection.
SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+$|^\[[0-9A-Fa-f:.]+\]$")


class VmUnavailable(Exception):
    """QEMU (or a tool it needs) is missing, or the requested accelerator does not work."""


def qemu_version() -> str:
    """`qemu-system-x86_64 --version`'s first line (VmUnavailable when QEMU is missing)."""
    binary = shutil.which(QEMU)
    if binary is None:
        raise VmUnavailable(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    return result.stdout.splitlines()[0] if result.stdout else "unknown"


def missing_tools() -> list[str]:
    """Host programs a VM launch needs that are not on PATH."""
    return [tool for tool in (QEMU, QEMU_IMG, "socat") if shutil.which(tool) is None]


@dataclass
class VmPlan:
    """Everything one VM is started with."""

    image: Image
    overlay: Path
    config_file: Path
    memory_mb: int
    cpus: int = 1
    accelerator: str = "tcg"
    #: (host, port) of each endpoint the guest may reach, in order: guest port 10000 + index.
    endpoints: list[tuple[str, int]] = field(default_factory=list)
    shared_cache: Path | None = None


def _accelerator_args(accelerator: str) -> list[str]:
    if accelerator == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # Under emulation a plain CPU model boots faster than `max` (fewer features for the kernel to set up
    # and emulate); Debian's userland needs nothing beyond x86-64 baseline.
    return ["-accel", "tcg,thread=multi", "-cpu", "qemu64"]


def _machine_args(image: Image, memory_mb: int, cpus: int, accelerator: str, cmdline: str) -> list[str]:
    return [
        QEMU, "-M", "q35,smbus=off,sata=off", *_accelerator_args(accelerator),
        "-m", str(memory_mb), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline,
    ]


def qemu_argv(plan: VmPlan) -> list[str]:
    """The QEMU command line for a plan (the console is QEMU's stdout)."""
    argv = _machine_args(plan.image, plan.memory_mb, plan.cpus, plan.accelerator, KERNEL_ARGS)
    netdev = "user,id=net0,restrict=on,ipv6=off"
    for index, (host, port) in enumerate(plan.endpoints):
        if not SAFE_HOST.match(host) or not 0 < int(port) < 65536:
            raise VmUnavailable(f"endpoint {host!r}:{port} is not a plain host name or address")
        # socat runs once per connection: only this endpoint, byte for byte (TLS stays end to end).
        netdev += f",guestfwd=tcp:{FORWARD_ADDRESS}:{FORWARD_BASE_PORT + index}-cmd:socat - TCP:{host}:{port}"
    argv += [
        "-drive", f"file={plan.overlay},format=qcow2,if=none,id=root,cache=unsafe,discard=unmap",
        "-device", "virtio-blk-pci,drive=root",
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        "-fw_cfg", f"name=opt/swarm/config,file={plan.config_file}",
    ]
    if plan.shared_cache is not None:
        argv += ["-fsdev", f"local,id=cache,path={plan.shared_cache},security_model=none,readonly=on",
                 "-device", f"virtio-9p-pci,fsdev=cache,mount_tag={SHARED_CACHE_TAG}"]
    return argv


def guest_config(plan: VmPlan, *, token: str | None, boot_env: dict, max_processes: int,
                 hostname: str = "swarm-vm") -> dict:
    """What the guest init reads from fw_cfg (see guest_init.py)."""
    return {
        "hostname": hostname,
        "token": token,
        "boot_env": boot_env,
        "forwards": [{"host": host, "port": port, "guest_port": FORWARD_BASE_PORT + index}
                     for index, (host, port) in enumerate(plan.endpoints)],
        "shared_cache": plan.shared_cache is not None,
        "max_processes": max_processes,
    }


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold a token)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def create_overlay(image: Image, overlay: Path) -> None:
    """A fresh qcow2 overlay backed by the image's root filesystem: the VM's only writable disk."""
    try:
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.rootfs),
                        str(overlay)], check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise VmUnavailable(f"{QEMU_IMG} is not installed (Debian package qemu-utils)") from exc
    except subprocess.CalledProcessError as exc:
        raise VmUnavailable(f"qemu-img create failed: {exc.stderr.strip()[-500:]}") from exc


def probe_boot(image: Image, accelerator: str, timeout: float) -> tuple[bool, str]:
    """Boot the image's kernel + initramfs until the probe marker; (worked, why not)."""
    argv = _machine_args(image, 256, 1, accelerator, "console=ttyS0 quiet panic=-1 swarm.probe=1")
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as exc:
        return False, f"could not start QEMU: {exc}"
    output: list[bytes] = []
    found = threading.Event()

    def read() -> None:
        for line in process.stdout:
            output.append(line)
            if PROBE_MARKER.encode() in line:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not found.is_set() and process.poll() is None and time.monotonic() < deadline:
        found.wait(0.1)
    if process.poll() is None:
        process.kill()
    process.wait()
    reader.join(2)
    if found.is_set():
        return True, ""
    tail = b"".join(output)[-300:].decode(errors="replace").strip()
    if process.returncode not in (0, -9) or tail:
        return False, f"QEMU exited ({process.returncode}) before the guest's init: {tail}"
    return False, f"the guest did not reach its init within {timeout:.0f} s"


def _kvm_openable() -> str:
    try:
        descriptor = os.open("/dev/kvm", os.O_RDWR)
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror}"
    os.close(descriptor)
    return ""


def _verdict_path(image: Image, cache_dir: str | os.PathLike, version: str) -> Path:
    """Where the probe's verdict for this QEMU version and image is cached."""
    key = hashlib.sha256(f"{version}\0{image.key}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"accelerator-{key}.json"


def probe_accelerator(image: Image, cache_dir: str | os.PathLike, *, timeout: float = PROBE_TIMEOUT_SECONDS,
                      refresh: bool = False) -> dict:
    """`{"accelerator": "kvm"|"tcg", "kvm_reason": …}` for this host, probed once and cached."""
    version = qemu_version()
    cache = _verdict_path(image, cache_dir, version)
    if not refresh:
        try:
            return json.loads(cache.read_text())
        except (OSError, ValueError):
            pass
    started = time.monotonic()
    reason = _kvm_openable()
    kvm_works = False
    if not reason:
        kvm_works, reason = probe_boot(image, "kvm", timeout)
    verdict = {
        "accelerator": "kvm" if kvm_works else "tcg",
        "kvm_reason": reason,
        "qemu_version": version,
        "image": image.key,
        "probed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "probe_seconds": round(time.monotonic() - started, 2),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    part = cache.with_suffix(f".{os.getpid()}.part")
    part.write_text(json.dumps(verdict))
    os.replace(part, cache)
    return verdict


def cached_accelerator(image: Image, cache_dir: str | os.PathLike) -> dict | None:
    """The cached probe verdict, or None when this host has not been probed for this image (never probes)."""
    try:
        return json.loads(_verdict_path(image, cache_dir, qemu_version()).read_text())
    except (VmUnavailable, OSError, ValueError):
        return None
