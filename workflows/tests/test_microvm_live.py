"""The microvm runtime for real: API → Celery worker → supervisor → QEMU (TCG here) → guest `swarm-agent boot` → API.

Every test boots a real VM from the image `make test` built (the session
fixture builds it when missing, so these never skip); VM boots are slow
under TCG, so each test packs what it checks into one boot.
"""
from __future__ import annotations

import signal
import socket
import uuid
from urllib.parse import urlsplit

import boto3
import httpx
import psutil
import pytest

from workflows.tests.conftest import events_of, publish, wait_finished, wait_for
from workflows.tests.test_executions_live import _processes_with

pytestmark = pytest.mark.live
VM_TIMEOUT = 240


@pytest.fixture
def vm_system(live_system, microvm_image):
    return live_system


def _host_address() -> str:
    """This machine's own non-loopback address (a target the guest must not reach)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.2"
    finally:
        probe.close()


def _spawn(api, workflow, **body) -> dict:
    response = api.post(f"/workflows/{workflow.pk}/executions", json={"runtime": "microvm", **body})
    assert response.status_code == 202, response.text
    return response.json()


def _output(events) -> list[str]:
    return [e["message"] for e in events if e["type"] == "output"]


def _wait_runtime_exited(api, execution_id: int) -> list[dict]:
    return wait_for(lambda: (lambda events: events if any(e["type"] == "runtime_exited" for e in events) else None)(
        events_of(api, execution_id)), timeout=60, message="the supervisor's runtime_exited report")


ISOLATION_PROBE = """
import os, socket
print("uid", os.getuid())
print("mem_mib", int(open("/proc/meminfo").read().split()[1]) // 1024)
for label, host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=3).close()
        print("reachable", label)
    except OSError as error:
        print("blocked", label, type(error).__name__)
print("fw_cfg readable", os.access("/sys/firmware/qemu_fw_cfg/by_name/opt/swarm/config/raw", os.R_OK))
"""


def test_a_workflow_runs_in_its_own_vm_that_reaches_only_the_control_plane_and_bundle_store(
        vm_system, admin_api, engine_token, s3_server):
    port = urlsplit(vm_system.url).port
    s3 = urlsplit(s3_server.endpoint_url)
    host = _host_address()
    targets = [("control plane via the slirp host", "10.0.2.2", port), ("s3 via the slirp host", "10.0.2.2", s3.port),
               ("another host port via the slirp host", "10.0.2.2", 22),
               ("control plane on the host's address", host, port), ("guest loopback", "127.0.0.1", port),
               ("the forward address on another port", "10.0.2.100", 80)]
    workflow = publish(admin_api, {"main.py": ISOLATION_PROBE.format(targets=targets)}, workflow="vmprobe",
                       memory_mb=192)
    with vm_system.api(engine_token) as api:
        spawned = _spawn(api, workflow)
        assert spawned["runtime"] == "microvm"
        finished = wait_finished(api, spawned["id"], timeout=VM_TIMEOUT)
        events = _wait_runtime_exited(api, spawned["id"])
        ready = httpx.get(f"{vm_system.url}/readyz", timeout=30).json()
    assert finished["status"] == "succeeded", events
    types = [e["type"] for e in events if e["type"] != "output"]
    assert types[:3] == ["spawn_requested", "runtime_started", "metadata_served"], types
    # The supervisor warmed the host cache; the guest read it read-only over 9p and verified it.
    assert "bundle_cache_hit" in types and "bundle_fetched" not in types, types
    assert types[-2:] == ["exited", "runtime_exited"], types
    started = next(e for e in events if e["type"] == "runtime_started")
    assert started["data"]["sandbox"] == "microvm" and started["data"]["accelerator"] in ("kvm", "tcg")
    assert started["data"]["memory_mb"] == 192 + 128 and started["data"]["cpus"] == 1
    output = _output(events)
    assert output[0] == "uid 1000", output  # the entrypoint is not root in its VM
    assert 192 < int(output[1].split()[1]) <= 192 + 128, output
    # Refused or timed out, never reachable: restrict=on routes nothing; only the guestfwd ports lead out.
    assert [line.rsplit(" ", 1)[0] for line in output[2:-1]] == [f"blocked {label}" for label, _, _ in targets]
    assert output[-1] == "fw_cfg readable False"
    exited = next(e for e in events if e["type"] == "runtime_exited")
    assert exited["data"]["kind"] == "microvm" and exited["data"]["returncode"] == 0
    assert "swarm-guest: init" in exited["data"]["console_tail"]
    assert {"vm_started", "guest_init", "agent_start", "boot_exited"} <= set(exited["data"]["timeline"])
    assert ready["runtimes"]["microvm"]["available"] is True
    assert ready["runtimes"]["microvm"]["accelerator"] == started["data"]["accelerator"]


def _qemu_of(execution_id: int) -> psutil.Process | None:
    """The QEMU process of an execution (its overlay is on its command line)."""
    return next(iter(_processes_with(f"/{execution_id}/rootfs.qcow2")), None)


def test_sigkill_of_the_vm_fails_the_execution_with_vm_exited(vm_system, admin_api, engine_token):
    workflow = publish(admin_api, {"main.py": "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"},
                       workflow="vmkill", memory_mb=128)
    with vm_system.api(engine_token) as api:
        spawned = _spawn(api, workflow)
        wait_for(lambda: "ready" in _output(events_of(api, spawned["id"])), timeout=VM_TIMEOUT,
                 message="the guest's entrypoint to start")
        qemu = _qemu_of(spawned["id"])
        assert qemu is not None
        qemu.send_signal(signal.SIGKILL)
        finished = wait_finished(api, spawned["id"], timeout=60)
        events = events_of(api, spawned["id"])
    assert finished["status"] == "failed", events
    error = next(e for e in events if e["type"] == "error")
    assert error["data"]["code"] == "vm_exited" and "SIGKILL" in error["message"]
    exited = next(e for e in events if e["type"] == "runtime_exited")
    assert exited["data"]["returncode"] == -9 and "swarm-guest: agent" in exited["data"]["console_tail"]


def test_a_bundle_whose_hash_does_not_match_is_refused_in_the_guest_and_the_vm_stops(
        vm_system, admin_api, engine_token, s3_server):
    from conftest import make_bundle

    marker = f"must-not-run-{uuid.uuid4().hex}"
    workflow = publish(admin_api, {"main.py": f"print('{marker}')\n"}, workflow="vmtampered", memory_mb=128)
    bundle = workflow.versions.get().bundle
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name=s3_server.region)
    client.put_object(Bucket=s3_server.bucket, Key=bundle.storage_key,
                      Body=make_bundle({"main.py": f"print('{marker} evil')\n"}))
    with vm_system.api(engine_token) as api:
        spawned = _spawn(api, workflow)
        finished = wait_finished(api, spawned["id"], timeout=VM_TIMEOUT)
        events = _wait_runtime_exited(api, spawned["id"])
    assert finished["status"] == "failed"
    error = next(e for e in events if e["type"] == "error")
    # The host's prefetch refused the bytes, so the guest fetched them itself (through its relay to the bundle
    # store) and refused them too: nothing ran, and the VM stopped on its own.
    assert error["data"]["code"] == "hash_mismatch" and bundle.sha256 in error["message"]
    assert not [e for e in events if e["type"] in ("started", "output", "unpacked")]
    exited = next(e for e in events if e["type"] == "runtime_exited")
    assert exited["data"]["returncode"] == 0 and exited["data"]["host_cache"]["error"].startswith("HashMismatch")
    assert exited["data"]["boot_exit_code"] == 70


FORK_AND_FILL = """
import os, sys, time
children = 0
try:
    for _ in range(10000):
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", "120"])
        children += 1
except OSError as error:
    print("fork refused after", children, "children:", type(error).__name__, flush=True)
written = 0
try:
    with open("/opt/workflow/fill", "wb") as fill:
        block = b"x" * (4 << 20)
        while True:
            fill.write(block)
            written += len(block)
except OSError as error:
    print("disk full after", written >> 20, "MiB:", error.strerror, flush=True)
sys.exit(1)
"""


def test_a_fork_bomb_and_a_full_disk_stay_inside_the_vm(vm_system, admin_api, engine_token):
    workflow = publish(admin_api, {"main.py": FORK_AND_FILL}, workflow="vmbomb", memory_mb=512)
    host_processes = len(psutil.pids())
    with vm_system.api(engine_token) as api:
        spawned = _spawn(api, workflow)
        finished = wait_finished(api, spawned["id"], timeout=VM_TIMEOUT)
        events = _wait_runtime_exited(api, spawned["id"])
    assert finished["status"] == "failed" and finished["exit_code"] == 1, events
    output = _output(events)
    refused = next(line for line in output if line.startswith("fork refused after"))
    assert int(refused.split()[3]) < 128 and "BlockingIOError" in refused  # SWARM_MICROVM_MAX_PROCESSES
    full = next(line for line in output if line.startswith("disk full after"))
    assert "No space left on device" in full
    # The host saw none of it: no process storm here, and the VM's disk was its overlay, now removed.
    assert len(psutil.pids()) < host_processes + 50
    assert _qemu_of(spawned["id"]) is None


def test_swarmctl_run_runtime_microvm_follow(vm_system, admin_api, engine_token):
    import os
    import subprocess
    import sys

    publish(admin_api, {"main.py": "import sys\nprint('hello from a vm')\nsys.exit(3)\n"}, workflow="vmctl",
            memory_mb=128)
    env = {"PATH": os.environ["PATH"], "SWARM_URL": vm_system.url, "SWARM_TOKEN": engine_token}
    result = subprocess.run([sys.executable, "-m", "swarm_agent.cli_ctl", "run", "acme/vmctl", "--runtime",
                             "microvm", "--follow"], env=env, capture_output=True, text=True, timeout=VM_TIMEOUT)
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["hello from a vm"]
    assert "on the microvm runtime" in result.stderr and "accelerator: " in result.stderr
    unknown = subprocess.run([sys.executable, "-m", "swarm_agent.cli_ctl", "run", "acme/vmctl", "--runtime",
                              "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode != 0 and "known runtimes: drone, microvm, process" in unknown.stderr
