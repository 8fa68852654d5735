"""`swarm-agent boot` as real processes against a real (counting) HTTP server; no Django involved."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from swarm_agent.boot.cache import BundleCache

CHUNK = 64 * 1024


def tarball(files: dict[str, bytes | str], *, mode: int = 0o644) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class CountingServer:
    """Serves blobs from memory on 127.0.0.1, slowly enough for boots to overlap; counts bytes sent."""

    def __init__(self, delay_per_chunk: float = 0.005):
        self.blobs: dict[str, bytes] = {}
        self.bytes_sent = 0
        self.requests = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = outer.blobs.get(self.path)
                with lock:
                    outer.requests += 1
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for start in range(0, len(body), CHUNK):
                    self.wfile.write(body[start:start + CHUNK])
                    with lock:
                        outer.bytes_sent += len(body[start:start + CHUNK])
                    time.sleep(delay_per_chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, data: bytes) -> tuple[str, str]:
        sha256 = hashlib.sha256(data).hexdigest()
        self.blobs[f"/{sha256}.tar.gz"] = data
        return f"{self.url}/{sha256}.tar.gz", sha256

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def blob_server():
    server = CountingServer()
    yield server
    server.stop()


def boot(url: str, sha256: str, cache: Path, workdir: Path, *, wait: bool = True, **env) -> subprocess.Popen:
    environment = {"PATH": os.environ["PATH"], "BUNDLE_URL": url, "BUNDLE_HASH": sha256, **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "swarm_agent.cli_agent", "boot", "--cache-dir", str(cache), "--workdir", str(workdir)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    if wait:
        process.out, process.err = process.communicate(timeout=60)
    return process


def events_of(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_boot_runs_the_entrypoint_with_a_clean_environment(blob_server, tmp_path):
    entrypoint = ("import os,sys\nprint('parent', os.environ.get('PARENT_ONLY'), os.environ.get('BUNDLE_URL'))\n"
                  "sys.exit(3)\n")
    url, sha256 = blob_server.publish(tarball({"main.py": entrypoint}))
    process = subprocess.run(
        [sys.executable, "-m", "swarm_agent.cli_agent", "boot", "--cache-dir", str(tmp_path / "c"),
         "--workdir", str(tmp_path / "w")],
        env={"PATH": os.environ["PATH"], "BUNDLE_URL": url, "BUNDLE_HASH": sha256, "PARENT_ONLY": "leak"},
        capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 3, process.stderr
    assert process.stdout.strip() == "parent None None"
    types = [event["type"] for event in events_of(process.stderr)]
    assert types == ["bundle_cache_miss", "bundle_fetched", "bundle_verified", "unpacked", "started", "exited"]


def test_eight_concurrent_boots_of_one_hash_download_it_once(blob_server, tmp_path):
    data = tarball({"main.py": "print('booted')\n", "blob.bin": os.urandom(1024 * 1024)})
    url, sha256 = blob_server.publish(data)
    processes = [boot(url, sha256, tmp_path / "cache", tmp_path / f"work{i}", wait=False) for i in range(8)]
    results = [process.communicate(timeout=60) for process in processes]
    assert [p.returncode for p in processes] == [0] * 8, [r[1] for r in results]
    assert all(stdout.strip() == "booted" for stdout, _ in results)
    assert blob_server.requests == 1 and blob_server.bytes_sent == len(data)
    fetched = sum("bundle_fetched" in [e["type"] for e in events_of(stderr)] for _, stderr in results)
    assert fetched == 1


def test_a_hash_mismatch_runs_nothing_and_caches_nothing(blob_server, tmp_path):
    marker = tmp_path / "ran"
    url, _ = blob_server.publish(tarball({"main.py": f"open({str(marker)!r}, 'w').write('x')\n"}))
    wanted = hashlib.sha256(b"something else").hexdigest()
    process = boot(url, wanted, tmp_path / "cache", tmp_path / "work")
    assert process.returncode == 70
    error = events_of(process.err)[-1]
    assert error["type"] == "error" and error["data"]["code"] == "hash_mismatch"
    assert not marker.exists()
    assert not list((tmp_path / "cache" / "bundles").glob("*.tar.gz"))
    assert not list((tmp_path / "cache" / "bundles").glob(".*.part"))


def test_a_corrupt_cache_entry_is_discarded_and_fetched_again(blob_server, tmp_path):
    data = tarball({"main.py": "print('good')\n"})
    url, sha256 = blob_server.publish(data)
    cached = tmp_path / "cache" / "bundles" / f"{sha256}.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data[:-20] + b"\0" * 20)  # right name, wrong bytes
    process = boot(url, sha256, tmp_path / "cache", tmp_path / "work")
    assert process.returncode == 0 and process.out.strip() == "good"
    events = events_of(process.err)
    assert events[0]["type"] == "bundle_cache_miss" and events[0]["data"]["reason"] == "corrupt"
    assert "bundle_fetched" in [event["type"] for event in events]
    assert cached.read_bytes() == data and blob_server.bytes_sent == len(data)


def test_a_cache_hit_is_verified_and_used(blob_server, tmp_path):
    url, sha256 = blob_server.publish(tarball({"main.py": "print('hit')\n"}))
    boot(url, sha256, tmp_path / "cache", tmp_path / "work")
    sent = blob_server.bytes_sent
    process = boot(url, sha256, tmp_path / "cache", tmp_path / "work")
    assert process.returncode == 0 and blob_server.bytes_sent == sent
    types = [event["type"] for event in events_of(process.err)]
    assert types[:3] == ["bundle_cache_hit", "bundle_verified", "unpacked"]


@pytest.mark.parametrize("member, code", [("../escape.py", "path_traversal"), ("/etc/evil", "absolute_path")])
def test_an_unsafe_bundle_is_refused_before_anything_runs(blob_server, tmp_path, member, code):
    url, sha256 = blob_server.publish(tarball({"main.py": "print('ran')\n", member: "x"}))
    process = boot(url, sha256, tmp_path / "cache", tmp_path / "work")
    assert process.returncode == 70 and process.out == ""
    error = events_of(process.err)[-1]
    assert error["type"] == "error" and error["data"]["code"] == code
    assert not (tmp_path / "escape.py").exists()
    assert list((tmp_path / "work").iterdir()) == []


def test_sigterm_kills_the_entrypoints_whole_process_group(blob_server, tmp_path):
    marker = f"grandchild-{uuid.uuid4().hex}"
    url, sha256 = blob_server.publish(tarball({"main.py": (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\n"
        "print('ready', flush=True)\ntime.sleep(300)\n")}))
    process = boot(url, sha256, tmp_path / "cache", tmp_path / "work", wait=False)
    assert process.stdout.readline().strip() == "ready"

    def marked():
        return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]

    assert marked()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while marked() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not marked()


def test_timeout_kills_the_entrypoint(blob_server, tmp_path):
    entrypoint = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n"
    url, sha256 = blob_server.publish(tarball({"main.py": entrypoint}))
    process = boot(url, sha256, tmp_path / "cache", tmp_path / "work", SWARM_TIMEOUT_SEC="1")
    assert process.returncode == 128 + signal.SIGKILL
    exited = events_of(process.err)[-1]
    assert exited["type"] == "exited" and exited["data"]["timed_out"] is True


def test_memory_over_the_limit_kills_the_whole_group(blob_server, tmp_path):
    # The memory is held by a child in the entrypoint's group: the group is what is measured and killed.
    entrypoint = ("import subprocess, sys\n"
                  "subprocess.run([sys.executable, '-c', "
                  "'import time; hog = bytearray(200 * 1024 * 1024); print(\"allocated\", flush=True); "
                  "time.sleep(60)'])\n")
    url, sha256 = blob_server.publish(tarball({"main.py": entrypoint}))
    started = time.monotonic()
    process = boot(url, sha256, tmp_path / "cache", tmp_path / "work", SWARM_MEMORY_MB="64")
    assert time.monotonic() - started < 30
    assert process.returncode == 128 + signal.SIGKILL, process.err
    exited = events_of(process.err)[-1]
    assert exited["type"] == "exited" and exited["data"]["memory_exceeded"] is True
    assert exited["data"]["peak_resident_mb"] > 64 and "64 MiB limit" in exited["message"]


def test_memory_within_the_limit_is_reported_and_left_alone(blob_server, tmp_path):
    entrypoint = "import time\nblock = bytearray(40 * 1024 * 1024)\ntime.sleep(1)\nprint('done')\n"
    url, sha256 = blob_server.publish(tarball({"main.py": entrypoint}))
    process = boot(url, sha256, tmp_path / "cache", tmp_path / "work", SWARM_MEMORY_MB="256")
    assert process.returncode == 0, process.err
    exited = events_of(process.err)[-1]
    assert exited["data"]["memory_exceeded"] is False and exited["data"]["peak_resident_mb"] >= 40


def test_group_memory_is_read_from_proc_whatever_the_process_names(tmp_path):
    from swarm_agent.boot.runner import PAGE_SIZE, group_resident_bytes

    def fake(pid: int, comm: str, pgrp: int, rss_pages: int):
        rest = ["S", "1", str(pgrp)] + ["0"] * 18 + [str(rss_pages)] + ["0"] * 20
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_bytes(f"{pid} ({comm}) {' '.join(rest)}".encode())

    fake(10, "python3", 10, 100)
    fake(11, "odd) name (x", 10, 50)
    fake(12, "other", 99, 1000)
    (tmp_path / "self").mkdir()
    assert group_resident_bytes(10, proc=tmp_path) == 150 * PAGE_SIZE
    assert group_resident_bytes(12, proc=tmp_path / "missing") == 0


def test_the_cache_keeps_to_its_budget_least_recently_used_out_first(blob_server, tmp_path):
    bundles = [tarball({"main.py": "x", "pad.bin": os.urandom(300 * 1024)}) for _ in range(3)]
    published = [blob_server.publish(data) for data in bundles]
    cache = BundleCache(tmp_path / "cache", budget_bytes=int(2.5 * 300 * 1024))
    first = cache.obtain(published[0][1], published[0][0])
    cache.obtain(published[1][1], published[1][0])
    os.utime(first.path, (time.time() + 5, time.time() + 5))  # the first is used again, most recently
    cache.obtain(published[2][1], published[2][0])
    remaining = {path.name for path in cache.entries()}
    assert remaining == {f"{published[0][1]}.tar.gz", f"{published[2][1]}.tar.gz"}
    assert cache.size() <= cache.budget_bytes


def test_the_agent_never_imports_django():
    code = ("import sys, swarm_agent.cli_agent, swarm_agent.cli_ctl, swarm_agent.commands.boot, "
            "swarm_agent.ctl.run, swarm_agent.boot.cache, swarm_agent.boot.unpack, swarm_agent.boot.runner; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework', 'swarm')], "
            "sorted(m for m in sys.modules if m.startswith(('django', 'swarm.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"]}, cwd="/")
    assert result.returncode == 0, result.stderr


def test_the_reporter_makes_every_string_storable():
    from swarm_agent.boot.reporter import storable, storable_text

    assert storable_text("a\x00b\ud800c") == "a\ufffdb\ufffdc"
    assert storable_text("plain \U0001F600 text") == "plain \U0001F600 text"
    assert storable({"k\x00": ["x\udfff", 3, {"n": None}]}) == {"k\ufffd": ["x\ufffd", 3, {"n": None}]}


def test_a_nul_printed_by_the_entrypoint_is_reported_as_a_replacement_character(tmp_path):
    from swarm_agent.boot.reporter import EventReporter

    sent = []

    class Recorder(EventReporter):
        def _send(self, batch):
            sent.extend(batch)

    reporter = Recorder("http://127.0.0.1:9/unused", "token")
    reporter.output("stdout", "before\x00after")
    reporter.event("error", "bad \udcff name", {"path": "/x/\udcff"})
    reporter.close()
    assert sent == [{"type": "output", "stream": "stdout", "message": "before\ufffdafter"},
                    {"type": "error", "message": "bad \ufffd name", "data": {"path": "/x/\ufffd"}}]
