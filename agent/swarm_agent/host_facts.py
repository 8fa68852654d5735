"""What the agent reports about its machine: drone type detection and /proc metrics (Linux)."""
from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path

DRONE_TYPES = ("lxc", "qemu", "bare-metal", "unknown")
VIRT_TO_TYPE = {"lxc": "lxc", "lxc-libvirt": "lxc", "kvm": "qemu", "qemu": "qemu", "none": "bare-metal"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def detect_drone_type() -> str:
    """lxc, qemu, bare-metal or unknown: systemd-detect-virt, then /proc/1/environ, then DMI and cpuinfo."""
    tool = shutil.which("systemd-detect-virt")
    if tool:
        try:
            result = subprocess.run([tool], capture_output=True, text=True, timeout=5, check=False)
            virt = result.stdout.strip()
            if virt:
                return VIRT_TO_TYPE.get(virt, "unknown")
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        environ = Path("/proc/1/environ").read_bytes().split(b"\0")
    except OSError:
        environ = []
    for entry in environ:
        if entry.startswith(b"container="):
            return "lxc" if entry == b"container=lxc" else "unknown"
    dmi = " ".join(_read(f"/sys/class/dmi/id/{name}") for name in ("sys_vendor", "product_name", "bios_vendor"))
    if "QEMU" in dmi.upper() or "KVM" in dmi.upper():
        return "qemu"
    cpuinfo = _read("/proc/cpuinfo")
    if not cpuinfo:
        return "unknown"
    if " hypervisor" in cpuinfo:
        return "unknown"  # some VM we cannot reboot through Proxmox: never treat it as rebootable
    return "bare-metal"


def primary_ip() -> str | None:
    """The source address used to reach the outside (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
    except OSError:
        return None


def host_identity() -> dict:
    """hostname, ip, os and arch for registration."""
    return {"hostname": socket.gethostname(), "ip": primary_ip(), "os": platform.system().lower(),
            "arch": platform.machine()}


class MetricsSampler:
    """CPU (from deltas of /proc/stat), memory, load, disk and uptime for each heartbeat."""

    def __init__(self, disk_path: str | os.PathLike = "/"):
        self.disk_path = str(disk_path)
        self._last_cpu = self._cpu_times()

    @staticmethod
    def _cpu_times() -> tuple[int, int] | None:
        line = _read("/proc/stat").splitlines()[:1]
        if not line or not line[0].startswith("cpu "):
            return None
        values = [int(value) for value in line[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    def cpu_percent(self) -> float | None:
        current = self._cpu_times()
        previous, self._last_cpu = self._last_cpu, current
        if current is None or previous is None or current[0] <= previous[0]:
            return None
        total, idle = current[0] - previous[0], current[1] - previous[1]
        return round(100.0 * (total - idle) / total, 1)

    @staticmethod
    def memory() -> dict:
        fields = {}
        for line in _read("/proc/meminfo").splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                fields[name] = int(parts[0]) * 1024
        total, available = fields.get("MemTotal"), fields.get("MemAvailable")
        if not total or available is None:
            return {}
        return {"memory_total_bytes": total, "memory_available_bytes": available,
                "memory_percent": round(100.0 * (total - available) / total, 1)}

    def disk(self) -> dict:
        try:
            stats = os.statvfs(self.disk_path)
        except OSError:
            return {}
        total = stats.f_blocks * stats.f_frsize
        free = stats.f_bavail * stats.f_frsize
        return {"disk_total_bytes": total, "disk_free_bytes": free,
                "disk_percent": round(100.0 * (total - free) / total, 1) if total else None}

    @staticmethod
    def load() -> dict:
        parts = _read("/proc/loadavg").split()
        if len(parts) < 3:
            return {}
        return {"load_1": float(parts[0]), "load_5": float(parts[1]), "load_15": float(parts[2])}

    def sample(self) -> dict:
        """One metrics dict for a heartbeat."""
        uptime = _read("/proc/uptime").split()
        metrics = {"cpu_percent": self.cpu_percent(), "cpu_count": os.cpu_count(), **self.memory(), **self.load(),
                   **self.disk(), "sampled_at": time.time()}
        if uptime:
            metrics["uptime_seconds"] = float(uptime[0])
        return metrics


SSH_HOST_KEY_GLOB = "ssh_host_*_key.pub"


def ssh_host_keys(directory: str = "/etc/ssh") -> list[str]:
    """This host's SSH public host keys (`type base64`), for the control plane to pin; empty without sshd."""
    keys = []
    for path in sorted(Path(directory).glob(SSH_HOST_KEY_GLOB)):
        try:
            parts = path.read_text().split()
        except OSError:
            continue
        if len(parts) >= 2 and parts[0].startswith(("ssh-", "ecdsa-")):
            keys.append(f"{parts[0]} {parts[1]}")
    return keys
