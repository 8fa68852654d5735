"""The `microvm` runtime: every execution in its own QEMU virtual machine, with its own kernel.

The image (kernel, initramfs, root filesystem with Python and `swarm_agent`)
is built from Debian packages by `manage.py microvm_image` (`make
microvm-image`; `swarm_agent.microvm.image`). Each VM boots from a fresh
copy-on-write overlay of it, gets the workflow's `memory_mb` (plus
`SWARM_MICROVM_MEMORY_OVERHEAD_MB` for its kernel and the boot) and `cpus`,
and reaches only the control plane and the bundle store (QEMU user
networking with `restrict=on` and one `guestfwd` per endpoint). The
metadata URL and token arrive through fw_cfg, never in the image. KVM is
used where a real probe boot showed it works (cached per host), TCG
otherwise. The VM belongs to the execution's detached supervisor
(`supervised.py`), so control-plane restarts do not touch it.
"""
from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from bundles.downloads import bundle_download_url
from swarm_agent.microvm.image import find_image
from swarm_agent.microvm.vm import VmUnavailable, cached_accelerator, missing_tools, probe_accelerator
from swarm_agent.relay import distinct_endpoints
from workflows.services.runtime_reports import runtime_token_issue, supervisor_deadline_seconds
from workflows.runtimes.base import RuntimeAvailability, RuntimeStartFailed, RuntimeUnavailable, register_runtime
from workflows.runtimes.supervised import (
    SupervisedRuntime,
    fresh_execution_root,
    launch_supervisor,
    runtime_report_url,
    write_secret_file,
)


def host_memory_mb() -> int:
    """This host's physical memory in MiB (MemTotal)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def guest_memory_mb(workflow) -> int:
    """The VM's RAM: the workflow's memory_mb plus the guest's own overhead."""
    return workflow.memory_mb + settings.SWARM_MICROVM_MEMORY_OVERHEAD_MB


def guest_cpus(workflow) -> int:
    """The workflow's CPUs, at most this host's."""
    return max(1, min(getattr(workflow, "cpus", 1) or 1, os.cpu_count() or 1))


def accelerator_verdict(image, *, probe: bool) -> dict | None:
    """The accelerator to use: the forced one, or the host's cached probe (run now when `probe`)."""
    forced = settings.SWARM_MICROVM_ACCELERATOR
    if forced in ("kvm", "tcg"):
        return {"accelerator": forced, "kvm_reason": "forced by SWARM_MICROVM_ACCELERATOR"}
    directory = Path(settings.SWARM_MICROVM_IMAGE_DIR) / "probes"
    if probe:
        return probe_accelerator(image, directory, timeout=settings.SWARM_MICROVM_PROBE_TIMEOUT)
    return cached_accelerator(image, directory)


@register_runtime("microvm")
class MicroVmRuntime(SupervisedRuntime):
    """One QEMU VM per execution (KVM when it really works here, else TCG)."""

    def _image(self):
        missing = missing_tools()
        if missing:
            raise RuntimeUnavailable(f"{', '.join(missing)} not installed (scripts/system-deps.sh installs them)")
        image = find_image(settings.SWARM_MICROVM_IMAGE_DIR)
        if image is None:
            raise RuntimeUnavailable(f"no microVM image built for this checkout under "
                                     f"{settings.SWARM_MICROVM_IMAGE_DIR} (run `make microvm-image`)")
        return image

    def availability(self) -> RuntimeAvailability:
        try:
            image = self._image()
        except RuntimeUnavailable as unavailable:
            return RuntimeAvailability(False, unavailable.reason)
        verdict = accelerator_verdict(image, probe=False)
        return RuntimeAvailability(True, details={
            "accelerator": verdict["accelerator"] if verdict else "unprobed",
            "kvm_reason": (verdict or {}).get("kvm_reason", "probed at the first start"),
            "image": image.key, "kernel": image.manifest.get("kernel_release"),
        })

    def check_spawn(self, workflow) -> None:
        self._image()
        wanted, host = guest_memory_mb(workflow), host_memory_mb()
        if wanted > host:
            raise RuntimeUnavailable(
                f"memory_mb={workflow.memory_mb} (+{settings.SWARM_MICROVM_MEMORY_OVERHEAD_MB} MiB for the guest) "
                f"is more than this host's {host} MiB", code="insufficient_memory", field="memory_mb")

    def start(self, execution, metadata_url: str, token: str) -> dict:
        try:
            image = self._image()
            verdict = accelerator_verdict(image, probe=True)
        except (RuntimeUnavailable, VmUnavailable) as exc:
            raise RuntimeStartFailed(str(exc)) from exc
        workflow = execution.workflow
        root = fresh_execution_root(execution)
        bundle = execution.version.bundle
        bundle_url = bundle_download_url(bundle)
        cache_dir = Path(settings.SWARM_PROCESS_CACHE_DIR)
        (cache_dir / "bundles").mkdir(parents=True, exist_ok=True)
        share = settings.SWARM_MICROVM_SHARE_CACHE
        runtime_token = runtime_token_issue(execution=execution)
        accelerator = verdict["accelerator"]
        spec = {
            "kind": "microvm", "execution_id": execution.pk, "root": str(root), "log": str(root / "console.log"),
            "report_url": runtime_report_url(execution),
            "runtime_token_file": str(write_secret_file(root / "runtime-token", runtime_token)),
            "deadline_seconds": supervisor_deadline_seconds(execution=execution),
            "prefetch": ({"cache_dir": str(cache_dir), "sha256": bundle.sha256, "url": bundle_url,
                          "budget_mb": settings.SWARM_PROCESS_CACHE_BUDGET_MB} if share else None),
            "vm": {
                "image_dir": settings.SWARM_MICROVM_IMAGE_DIR, "memory_mb": guest_memory_mb(workflow),
                "cpus": guest_cpus(workflow), "accelerator": accelerator,
                "endpoints": distinct_endpoints([metadata_url, bundle_url]),
                "shared_cache": str(cache_dir / "bundles") if share else None,
                "max_processes": settings.SWARM_MICROVM_MAX_PROCESSES,
                "token_file": str(write_secret_file(root / "metadata-token", token)),
                "boot_env": {"SWARM_METADATA_URL": metadata_url,
                             "SWARM_CACHE_BUDGET_MB": str(settings.SWARM_PROCESS_CACHE_BUDGET_MB)},
            },
        }
        state = launch_supervisor(root, spec)
        state.update(sandbox="microvm", accelerator=accelerator, network="isolated", image=image.key,
                     memory_mb=spec["vm"]["memory_mb"], cpus=spec["vm"]["cpus"], log=spec["log"])
        return state
