"""The supervisor's microVM half: warm the host cache, make the overlay, start QEMU, read its console.

Split from `supervisor.py` so the process-runtime path never imports the VM
code. See `microvm/vm.py` for the machine itself.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

from swarm_agent.microvm.image import find_image
from swarm_agent.microvm.vm import VmPlan, create_overlay, guest_config, qemu_argv, write_private

GUEST_MARK = re.compile(rb"^swarm-guest: (\S+)(.*)$")
#: Guest stage lines → timeline names (seconds since the supervisor started).
STAGES = {b"init": "guest_init", b"agent": "agent_start", b"boot-exited": "boot_exited",
          b"init-failed": "guest_init_failed"}


def _prefetch(supervisor, prefetch: dict) -> None:
    """Put the bundle in the host cache the guest sees read-only (one download per hash, host-wide).

    A failure is only noted: the guest's boot then fetches (and verifies) it
    itself and reports precisely what went wrong (e.g. `hash_mismatch`).
    """
    from swarm_agent.boot.cache import BundleCache
    from swarm_agent.boot.fetch import FetchError

    started = time.monotonic()
    cache = BundleCache(prefetch["cache_dir"], budget_bytes=int(prefetch.get("budget_mb") or 2048) * 1048576)
    try:
        entry = cache.obtain(prefetch["sha256"], prefetch["url"])
    except (FetchError, OSError, ValueError, Exception) as exc:  # noqa: BLE001 - noted, the guest retries
        supervisor.details["host_cache"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    else:
        supervisor.details["host_cache"] = {
            "hit": entry.hit, "ms": round((time.monotonic() - started) * 1000),
            **({"bytes": entry.fetched.size} if entry.fetched else {}),
        }
    supervisor._mark("bundle_prefetched")


def start_vm(supervisor):
    """Start the execution's VM; returns (the QEMU process, cleanup callables)."""
    spec = supervisor.spec
    vm = spec["vm"]
    root = supervisor.root
    image = find_image(vm["image_dir"])
    if image is None:
        raise RuntimeError(f"no microVM image for the current inputs under {vm['image_dir']}")
    if spec.get("prefetch"):
        _prefetch(supervisor, spec["prefetch"])
    overlay = root / "rootfs.qcow2"
    config_file = root / "guest-config.json"
    plan = VmPlan(image=image, overlay=overlay, config_file=config_file, memory_mb=int(vm["memory_mb"]),
                  cpus=int(vm.get("cpus") or 1), accelerator=vm["accelerator"],
                  endpoints=[tuple(endpoint) for endpoint in vm["endpoints"]],
                  shared_cache=Path(vm["shared_cache"]) if vm.get("shared_cache") else None)
    create_overlay(image, overlay)
    token = supervisor._read_secret(vm.get("token_file"))
    write_private(config_file, json.dumps(guest_config(plan, token=token, boot_env=vm.get("boot_env") or {},
                                                       max_processes=int(vm.get("max_processes") or 0))))
    supervisor.details["accelerator"] = plan.accelerator
    supervisor.details["image"] = image.key
    console = open(supervisor.console_path, "ab")  # noqa: SIM115 - closed by the reader thread
    process = subprocess.Popen(qemu_argv(plan), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    supervisor._mark("vm_started")

    def read_console() -> None:
        for line in process.stdout:
            console.write(line)
            console.flush()
            supervisor._mark("first_console_line")
            match = GUEST_MARK.match(line.rstrip())
            if match and match.group(1) in STAGES:
                supervisor._mark(STAGES[match.group(1)])
                if match.group(1) == b"init":
                    # QEMU read its fw_cfg file long ago; the token need not stay on the host's disk.
                    config_file.unlink(missing_ok=True)
                code = re.search(rb"code=(-?\d+)", match.group(2))
                if match.group(1) == b"boot-exited" and code:
                    supervisor.details["boot_exit_code"] = int(code.group(1))
        console.close()

    reader = threading.Thread(target=read_console, name="vm-console", daemon=True)
    reader.start()

    def finish():
        reader.join(10)
        config_file.unlink(missing_ok=True)
        overlay.unlink(missing_ok=True)

    return process, [finish]
