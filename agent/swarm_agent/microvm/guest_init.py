"""PID 1 of a microVM guest: mount, network, relays, then `swarm-agent boot`, then power off.

The initramfs switches root to the image's `/sbin/swarm-init`, which runs
this. Everything execution-specific comes from the host through fw_cfg
(`opt/swarm/config`, readable by root only): the boot's environment (the
metadata URL, never baked into the image), the metadata token (written to a
root-only file the boot deletes once read), and the endpoints to relay. The
guest's only network is QEMU's user-mode network with `restrict=on`: nothing
is routed out, and each allowed endpoint is one `guestfwd` address
(`10.0.2.100:<port>`). The boot reaches them through unix-socket relays
(`SWARM_HTTP_UNIX_SOCKETS`, the same mechanism as the bubblewrap sandbox),
so a presigned URL's `host:port` — and the Host header it signs — stays the
URL's own.

The entrypoint runs as the unprivileged `swarm` user (`SWARM_RUN_AS`) with
a process limit (RLIMIT_NPROC), so a fork bomb fails inside its VM; the boot
and this init stay root. When the boot exits the VM reboots, which QEMU
(`-no-reboot`) turns into its own exit; the supervisor on the host sees it.
Lines starting with `swarm-guest:` on the console mark the boot's stages
for the supervisor's timeline.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

CONFIG_PATH = Path("/sys/firmware/qemu_fw_cfg/by_name/opt/swarm/config/raw")
GUEST_ADDRESS = "10.0.2.15/24"
#: Where QEMU's guestfwd rules listen inside the guest (one port per allowed endpoint).
FORWARD_ADDRESS = "10.0.2.100"
RELAY_DIR = "/run/swarm-net"
TOKEN_DIR = "/run/swarm-token"
SHARED_CACHE_DIR = "/var/cache/swarm-host"
SHARED_CACHE_TAG = "swarmcache"
BUSYBOX = "/bin/busybox"
LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART = 0xfee1dead, 672274793, 0x01234567
MARK = "swarm-guest:"


def mark(stage: str, **details) -> None:
    """A timeline line on the console (the supervisor timestamps it on arrival)."""
    extra = "".join(f" {key}={value}" for key, value in details.items())
    print(f"{MARK} {stage}{extra}", flush=True)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def _mount(source: str, target: str, fstype: str, options: str = "") -> None:
    os.makedirs(target, exist_ok=True)
    _run(BUSYBOX, "mount", "-t", fstype, *(["-o", options] if options else []), source, target)


def _prepare_filesystems() -> None:
    _mount("proc", "/proc", "proc")
    _mount("sysfs", "/sys", "sysfs")
    _mount("tmpfs", "/run", "tmpfs", "mode=0755,nosuid,nodev")
    _mount("tmpfs", "/tmp", "tmpfs", "mode=1777,nosuid,nodev")
    os.makedirs("/dev/pts", exist_ok=True)


def _prepare_network() -> None:
    _run(BUSYBOX, "ip", "link", "set", "lo", "up")
    _run(BUSYBOX, "ip", "addr", "add", GUEST_ADDRESS, "dev", "eth0")
    _run(BUSYBOX, "ip", "link", "set", "eth0", "up")


def _mount_shared_cache() -> bool:
    """The host's bundle cache, read-only over 9p, when the host shares it."""
    try:
        _mount(SHARED_CACHE_TAG, SHARED_CACHE_DIR, "9p", "trans=virtio,version=9p2000.L,ro,cache=none,msize=262144")
    except subprocess.CalledProcessError:
        return False
    return True


def _start_relays(forwards: list[dict]) -> list:
    from swarm_agent.relay import UnixSocketRelay

    os.makedirs(RELAY_DIR, exist_ok=True)
    return [UnixSocketRelay(Path(RELAY_DIR) / f"{index}.sock", (FORWARD_ADDRESS, forward["guest_port"]))
            for index, forward in enumerate(forwards)]


def _write_token(token: str) -> str:
    os.makedirs(TOKEN_DIR, mode=0o700, exist_ok=True)
    path = os.path.join(TOKEN_DIR, "metadata-token")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token)
    return path


def _boot_environment(config: dict, token_file: str | None, shared: bool) -> dict:
    from swarm_agent.relay import socket_map

    forwards = config.get("forwards") or []
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "PYTHONUNBUFFERED": "1",
        "SWARM_CACHE_DIR": "/var/cache/swarm",
        "SWARM_WORKDIR": "/opt/workflow",
        "SWARM_RUN_AS": "swarm",
        "SWARM_HTTP_UNIX_SOCKETS": socket_map([(f["host"], f["port"]) for f in forwards], RELAY_DIR),
    }
    if shared:
        env["SWARM_SHARED_CACHE_DIR"] = SHARED_CACHE_DIR
    if token_file:
        env["SWARM_METADATA_TOKEN_FILE"] = token_file
    env.update({str(key): str(value) for key, value in (config.get("boot_env") or {}).items()})
    return env


def _run_boot(env: dict) -> None:
    """In the forked child: become `python -m swarm_agent.boot` without starting a second interpreter.

    An interpreter's start costs about a second under emulation (TCG); the
    fork already has one. The child gets exactly the boot's environment and
    a clean argv, like an exec would give it.
    """
    code = 70
    try:
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["swarm-agent boot"]
        from swarm_agent.boot.__main__ import main as boot_main

        code = boot_main([])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, int) and exit_.code is not None:
            print(exit_.code, file=sys.stderr, flush=True)
    except BaseException:  # noqa: BLE001 - reported on the console, the VM then stops
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait_reaping(pid: int) -> int:
    """Reap every child (PID 1 adopts orphans) until `pid` exits; its exit status."""
    while True:
        try:
            child, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if child == pid:
            return os.waitstatus_to_exitcode(status)


def _power_off() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    # QEMU runs with -no-reboot: a reboot ends the VM at once (works on every machine type).
    libc.syscall(169, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, 0)
    time.sleep(5)


def main() -> None:
    """Run the execution's boot inside the guest and end the VM when it exits."""
    try:
        _prepare_filesystems()
        mark("init")
        config = json.loads(CONFIG_PATH.read_bytes())
        socket.sethostname(config.get("hostname") or "swarm-vm")
        _prepare_network()
        shared = bool(config.get("shared_cache")) and _mount_shared_cache()
        relays = _start_relays(config.get("forwards") or [])
        token = config.pop("token", None)
        token_file = _write_token(token) if token else None
        env = _boot_environment(config, token_file, shared)
        limit = int(config.get("max_processes") or 0)
        if limit:
            # Inherited by the entrypoint, enforced once it runs as the unprivileged user (root is exempt).
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        mark("agent", relays=len(relays), shared_cache=int(shared))
        pid = os.fork()
        if pid == 0:
            _run_boot(env)
        code = _wait_reaping(pid)
        mark("boot-exited", code=code)
    except BaseException:  # noqa: BLE001 - PID 1 must never just die: the kernel would panic
        traceback.print_exc()
        mark("init-failed")
    _power_off()


if __name__ == "__main__":
    main()
