"""The microVM and supervisor pieces that need no VM: QEMU's command line, the initramfs, the shared cache, the supervisor."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from swarm_agent.boot.cache import BundleCache
from swarm_agent.boot.runner import EntrypointError, resolve_user
from swarm_agent.microvm.image import Image
from swarm_agent.microvm.initramfs import _Cpio
from swarm_agent.microvm.vm import VmPlan, guest_config, qemu_argv
from swarm_agent.relay import distinct_endpoints, socket_map


def _image(tmp_path: Path) -> Image:
    return Image(directory=tmp_path, manifest={"key": "k"})


def test_the_vm_gets_restricted_user_networking_with_one_forward_per_endpoint(tmp_path):
    plan = VmPlan(image=_image(tmp_path), overlay=tmp_path / "o.qcow2", config_file=tmp_path / "c.json",
                  memory_mb=640, cpus=2, accelerator="tcg",
                  endpoints=[("127.0.0.1", 8000), ("s3.internal", 9000)], shared_cache=tmp_path / "bundles")
    argv = qemu_argv(plan)
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev.startswith("user,id=net0,restrict=on,")
    assert netdev.count("guestfwd=") == 2
    assert "guestfwd=tcp:10.0.2.100:10000-cmd:socat - TCP:127.0.0.1:8000" in netdev
    assert "guestfwd=tcp:10.0.2.100:10001-cmd:socat - TCP:s3.internal:9000" in netdev
    assert argv[argv.index("-m") + 1] == "640" and argv[argv.index("-smp") + 1] == "2"
    assert f"file={tmp_path / 'o.qcow2'},format=qcow2" in argv[argv.index("-drive") + 1]
    assert any("readonly=on" in part and str(tmp_path / "bundles") in part for part in argv)
    assert "-no-reboot" in argv and argv[argv.index("-accel") + 1].startswith("tcg")
    config = guest_config(plan, token="swm_secret", boot_env={"SWARM_METADATA_URL": "u"}, max_processes=64)
    assert config["forwards"] == [{"host": "127.0.0.1", "port": 8000, "guest_port": 10000},
                                  {"host": "s3.internal", "port": 9000, "guest_port": 10001}]
    assert config["shared_cache"] is True and config["token"] == "swm_secret"
    # The token travels only in the fw_cfg file, never on QEMU's (world-readable) command line.
    assert not any("swm_secret" in part for part in argv)


def test_an_endpoint_host_that_is_not_a_plain_name_never_reaches_the_shell(tmp_path):
    from swarm_agent.microvm.vm import VmUnavailable

    plan = VmPlan(image=_image(tmp_path), overlay=tmp_path / "o", config_file=tmp_path / "c", memory_mb=256,
                  endpoints=[("evil;touch /tmp/pwned", 80)])
    with pytest.raises(VmUnavailable):
        qemu_argv(plan)


def test_relay_endpoints_are_distinct_and_mapped_to_sockets():
    endpoints = distinct_endpoints(["http://127.0.0.1:8000/api/v1/metadata", "http://127.0.0.1:8000/x",
                                    "https://s3.example.com/b/k?sig=1"])
    assert endpoints == [("127.0.0.1", 8000), ("s3.example.com", 443)]
    assert socket_map(endpoints, "/run/swarm-net") == ("127.0.0.1:8000=/run/swarm-net/0.sock,"
                                                      "s3.example.com:443=/run/swarm-net/1.sock")


def test_the_initramfs_is_a_newc_cpio_the_kernel_can_read():
    archive = _Cpio()
    archive.directory("bin")
    archive.file("init", b"#!/bin/busybox sh\n", 0o755)
    data = archive.close()
    assert data.startswith(b"070701") and b"init\0" in data and data.rstrip(b"\0").endswith(b"TRAILER!!!")
    assert len(data) % 4 == 0
    listing = subprocess.run(["cpio", "-it"], input=data, capture_output=True)
    if listing.returncode == 0:  # cpio is optional on the host; the format check above is the real one
        assert listing.stdout.split() == [b"bin", b"init"]


def _tarball(files: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    return buffer.getvalue()


@pytest.fixture
def http_directory(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_read_only_shared_cache_is_used_in_place_and_a_corrupt_entry_is_skipped(tmp_path, http_directory):
    served, base = http_directory
    bundle = _tarball({"main.py": b"print(1)\n"})
    sha256 = hashlib.sha256(bundle).hexdigest()
    (served / "b.tar.gz").write_bytes(bundle)
    shared = tmp_path / "host-bundles"
    shared.mkdir()
    (shared / f"{sha256}.tar.gz").write_bytes(bundle)
    cache = BundleCache(tmp_path / "guest", shared_directories=[shared])
    entry = cache.obtain(sha256, f"{base}/b.tar.gz")
    assert entry.hit and entry.path == shared / f"{sha256}.tar.gz"
    assert not cache.path_for(sha256).exists()  # nothing copied
    # The shared copy turns out corrupt: it cannot be deleted from here, only skipped.
    cache.discard_if_unchanged(sha256, entry.identity)
    again = cache.obtain(sha256, f"{base}/b.tar.gz")
    assert not again.hit and again.path == cache.path_for(sha256)
    assert (shared / f"{sha256}.tar.gz").exists()


def test_resolve_user_takes_names_and_uids():
    assert resolve_user("") is None
    assert resolve_user("0") == (0, 0) and resolve_user("root") == (0, 0)
    with pytest.raises(EntrypointError):
        resolve_user("no-such-user-here")


def _supervise(tmp_path: Path, argv: list[str], **spec) -> dict:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"kind": "process", "execution_id": 1, "root": str(tmp_path),
                                     "log": str(tmp_path / "boot.log"), "argv": argv,
                                     "env": {"PATH": "/usr/bin:/bin"}, **spec}))
    result = subprocess.run([sys.executable, "-m", "swarm_agent.supervisor", "--spec", str(spec_path),
                             "--foreground"], capture_output=True, text=True, timeout=60)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_supervisor_reports_how_the_boot_ended_with_its_output(tmp_path):
    report = _supervise(tmp_path, ["sh", "-c", "echo boot says hi; exit 3"])
    data = report["data"]
    assert report["type"] == "runtime_exited" and data["code"] == "boot_exited" and data["returncode"] == 3
    assert "exited with code 3" in data["reason"] and "boot says hi" in data["console_tail"]
    assert {"started", "exited"} <= set(data["timeline"])
    assert not (tmp_path / "spec.json").exists()  # the spec (it names a token file) is read once


def test_the_supervisor_kills_what_runs_past_its_deadline(tmp_path):
    data = _supervise(tmp_path, ["sleep", "60"], deadline_seconds=0.5)["data"]
    assert data["code"] == "deadline" and data["returncode"] == -15


def test_the_supervisor_detaches_into_its_own_session(tmp_path):
    import os
    import time

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"kind": "process", "execution_id": 1, "root": str(tmp_path),
                                     "log": str(tmp_path / "boot.log"), "argv": ["sleep", "30"],
                                     "env": {"PATH": "/usr/bin:/bin"}}))
    result = subprocess.run([sys.executable, "-m", "swarm_agent.supervisor", "--spec", str(spec_path)],
                            capture_output=True, text=True, timeout=60)
    daemon = json.loads(result.stdout)
    try:
        # A session of its own (double-forked: not even its leader), not a child of whoever started it.
        assert os.getsid(daemon["pid"]) != os.getsid(0)
        assert int(open(f"/proc/{daemon['pid']}/stat").read().rsplit(")", 1)[1].split()[1]) != os.getpid()
        from swarm_agent.supervisor import is_running

        assert is_running(daemon["pid"], daemon["start_time"]) and not is_running(daemon["pid"], "1")
    finally:
        os.kill(daemon["pid"], 15)
    for _ in range(100):
        if not is_running(daemon["pid"], daemon["start_time"]):
            break
        time.sleep(0.1)
    assert not is_running(daemon["pid"], daemon["start_time"])
