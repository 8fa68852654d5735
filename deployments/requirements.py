"""Resource requirements (RAM, disk, CPU cores, GPU) as numbers that add up.

A catalog entry declares them in its `requirements` field (docs/deployments.md#requirements):

    "requirements": {"ram_mb": 512, "disk_mb": 1024, "cpu_cores": 1, "gpu": false, "gpu_vram_mb": 0}

Vrooli's own fields (`ram_mb`, `disk_mb`, `cpu_cores`, `gpu`, as in its `deploymentRequirements`
definition and the newer `resources/redis/resource.json`) are read as they are; extra keys
(`bucket`, `source`, `confidence`, …) are kept out of the sums.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requirements:
    """What one running copy of something needs. `gpu` means it cannot run without one."""

    ram_mb: float = 0
    disk_mb: float = 0
    cpu_cores: float = 0
    gpu: bool = False
    gpu_vram_mb: float = 0

    def __add__(self, other: Requirements) -> Requirements:
        return Requirements(
            ram_mb=self.ram_mb + other.ram_mb,
            disk_mb=self.disk_mb + other.disk_mb,
            cpu_cores=round(self.cpu_cores + other.cpu_cores, 3),
            gpu=self.gpu or other.gpu,
            gpu_vram_mb=self.gpu_vram_mb + other.gpu_vram_mb,
        )

    def as_dict(self) -> dict:
        """JSON form, integers where the value is whole."""
        return {
            "ram_mb": _number(self.ram_mb),
            "disk_mb": _number(self.disk_mb),
            "cpu_cores": _number(self.cpu_cores),
            "gpu": self.gpu,
            "gpu_vram_mb": _number(self.gpu_vram_mb),
        }

    @classmethod
    def from_dict(cls, value: dict | None) -> Requirements:
        """From a declaration (already shape-checked) or a stored `as_dict()`; missing numbers are 0."""
        value = value or {}
        gpu = value.get("gpu", False)
        if isinstance(gpu, dict):  # {"required": true, "vram_mb": 8192}
            vram = gpu.get("vram_mb", value.get("gpu_vram_mb", 0))
            gpu = bool(gpu.get("required", False))
        else:
            vram = value.get("gpu_vram_mb", 0)
        return cls(
            ram_mb=float(value.get("ram_mb", 0) or 0),
            disk_mb=float(value.get("disk_mb", 0) or 0),
            cpu_cores=float(value.get("cpu_cores", 0) or 0),
            gpu=bool(gpu),
            gpu_vram_mb=float(vram or 0),
        )


def total(items) -> Requirements:
    """The sum of many requirements."""
    result = Requirements()
    for item in items:
        result = result + item
    return result


def delta(before: dict, after: dict) -> dict:
    """`after − before` per number (stored `as_dict()` forms), for swap effects."""
    return {key: _number(after[key] - before[key]) for key in ("ram_mb", "disk_mb", "cpu_cores", "gpu_vram_mb")}


def _number(value: float):
    rounded = round(float(value), 3)
    return int(rounded) if rounded == int(rounded) else rounded


def describe_megabytes(value: float) -> str:
    """`512 MB`, `1.5 GB` — for explanations read by people."""
    if abs(value) >= 1024:
        return f"{value / 1024:.1f} GB".replace(".0 GB", " GB")
    return f"{_number(value)} MB"


def describe_delta(changes: dict) -> str:
    """`RAM −496 MB, disk −924 MB` from a `delta()`; empty when nothing changes."""
    parts = []
    for key, label in (("ram_mb", "RAM"), ("disk_mb", "disk"), ("cpu_cores", "CPU"), ("gpu_vram_mb", "VRAM")):
        value = changes.get(key, 0)
        if not value:
            continue
        sign = "+" if value > 0 else "−"
        amount = f"{_number(abs(value))} cores" if key == "cpu_cores" else describe_megabytes(abs(value))
        parts.append(f"{label} {sign}{amount}")
    return ", ".join(parts)
