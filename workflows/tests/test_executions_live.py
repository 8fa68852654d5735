"""The whole path with real processes: API → Celery worker → process runtime → `swarm-agent boot` → API."""
from __future__ import annotations

import hashlib
import os
import uuid

import boto3
import psutil
import pytest

from workflows.tests.conftest import events_of, publish, wait_finished, wait_for

pytestmark = pytest.mark.live

SECRET_ENTRYPOINT = """
import hashlib, os, sys
secret = os.environ["GREETING_TOKEN"]
print("token is " + secret + " digest " + hashlib.sha256(secret.encode()).hexdigest()[:16])
print("inherited metadata token: " + str("SWARM_METADATA_TOKEN" in os.environ), file=sys.stderr)
print("env " + os.environ.get("WHO", "?"))
sys.exit(3)
"""


def _attach_secret(workflow, name: str, value: str):
    from workflows.services import tenant_secret_set

    return tenant_secret_set(tenant=workflow.tenant, name=name, value=value, workflows=[workflow], actor="test")


def test_done_when_flow_secret_cache_miss_then_hit(live_system, admin_api, engine_token, subprocess_environment,
                                                  live_server_process):
    workflow = publish(admin_api, {"main.py": SECRET_ENTRYPOINT})
    secret_value = f"s3cr3t-{uuid.uuid4().hex}"
    _attach_secret(workflow, "GREETING_TOKEN", secret_value)
    digest = hashlib.sha256(secret_value.encode()).hexdigest()[:16]

    with live_system.api(engine_token) as api:
        spawned = api.post(f"/workflows/{workflow.pk}/executions", json={"env": {"WHO": "world"}})
        assert spawned.status_code == 202, spawned.text
        body = spawned.json()
        assert body["status"] == "pending" and body["url"].endswith(f"/api/v1/executions/{body['id']}")
        finished = wait_finished(api, body["id"])
        events = events_of(api, body["id"])
        types = [event["type"] for event in events]
        assert finished["status"] == "failed" and finished["exit_code"] == 3, (finished, types)
        stages = [t for t in types if t != "output"]
        assert stages == ["spawn_requested", "runtime_started", "metadata_served", "bundle_cache_miss",
                          "bundle_fetched", "bundle_verified", "unpacked", "started", "exited"], stages
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        fetched = next(e for e in events if e["type"] == "bundle_fetched")
        assert fetched["data"]["bytes"] == workflow.versions.get().bundle.size and "ms" in fetched["data"]
        output = [e["message"] for e in events if e["type"] == "output"]
        assert f"token is ******** digest {digest}" in output
        assert "env world" in output
        assert "inherited metadata token: False" in output
        assert events[-1]["data"]["exit_code"] == 3

        second = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        assert wait_finished(api, second["id"])["exit_code"] == 3
        second_types = [e["type"] for e in events_of(api, second["id"]) if e["type"] != "output"]
        assert "bundle_cache_hit" in second_types and "bundle_fetched" not in second_types, second_types

        # The secret's value is nowhere: not in API responses, stored rows, or any log.
        for path in (f"/executions/{body['id']}", f"/executions/{body['id']}/events",
                     f"/workflows/{workflow.pk}/executions", f"/executions/{second['id']}/events"):
            assert secret_value not in api.get(path).text
    from workflows.models import ExecutionEvent, TenantSecret

    assert not ExecutionEvent.objects.filter(message__contains=secret_value).exists()
    assert secret_value not in TenantSecret.objects.get(name="GREETING_TOKEN").ciphertext
    assert secret_value not in live_system.worker.log_path.read_text(errors="replace")
    assert secret_value not in live_server_process.log_text()
    runtime_root = os.path.join(subprocess_environment["SWARM_VAR_DIR"], "executions", str(body["id"]))
    assert secret_value not in open(os.path.join(runtime_root, "boot.log"), errors="replace").read()


def test_tampered_object_in_s3_fails_with_a_clear_event_and_nothing_runs(live_system, admin_api, engine_token,
                                                                        s3_server):
    marker = f"must-not-run-{uuid.uuid4().hex}"
    workflow = publish(admin_api, {"main.py": f"print('{marker}')\n"}, workflow="tampered")
    bundle = workflow.versions.get().bundle
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name=s3_server.region)
    from conftest import make_bundle

    client.put_object(Bucket=s3_server.bucket, Key=bundle.storage_key,
                      Body=make_bundle({"main.py": f"print('{marker} evil')\n"}))
    with live_system.api(engine_token) as api:
        execution = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        finished = wait_finished(api, execution["id"])
        events = events_of(api, execution["id"])
    assert finished["status"] == "failed" and finished["exit_code"] is None
    error = next(e for e in events if e["type"] == "error")
    assert error["data"]["code"] == "hash_mismatch" and bundle.sha256 in error["message"]
    assert not [e for e in events if e["type"] in ("started", "output", "unpacked")]
    assert not (live_system.cache_dir / "bundles" / f"{bundle.sha256}.tar.gz").exists()


def test_corrupt_cache_entry_is_discarded_and_fetched_again(live_system, admin_api, engine_token):
    workflow = publish(admin_api, {"main.py": "print('fresh bytes')\n"}, workflow="corrupt")
    sha256 = workflow.versions.get().bundle.sha256
    with live_system.api(engine_token) as api:
        first = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        assert wait_finished(api, first["id"])["status"] == "succeeded"
        cached = live_system.cache_dir / "bundles" / f"{sha256}.tar.gz"
        cached.write_bytes(b"\x1f\x8b garbage that is not the bundle" * 10)
        second = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        assert wait_finished(api, second["id"])["status"] == "succeeded"
        events = events_of(api, second["id"])
    misses = [e for e in events if e["type"] == "bundle_cache_miss"]
    assert misses and misses[0]["data"]["reason"] == "corrupt"
    assert "bundle_fetched" in [e["type"] for e in events]
    assert "fresh bytes" in [e["message"] for e in events if e["type"] == "output"]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha256


NUL_PRINTER = r"""
import sys
sys.stdout.buffer.write(b"before\x00after\n")
sys.stdout.buffer.write(b"bad utf-8 \xff\xfe here\n")
print("the last line")
"""


def test_an_output_line_with_a_nul_byte_is_stored_with_a_replacement_character(live_system, admin_api,
                                                                              engine_token):
    # The API refuses NUL in JSON text (400 invalid_text); the boot sends U+FFFD in its place, so
    # the batch (and the lines after it) is not lost.
    workflow = publish(admin_api, {"main.py": NUL_PRINTER}, workflow="nul-printer")
    with live_system.api(engine_token) as api:
        execution = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        finished = wait_finished(api, execution["id"])
        output = [e["message"] for e in events_of(api, execution["id"]) if e["type"] == "output"]
    assert finished["status"] == "succeeded", (finished, output)
    assert output == ["before\ufffdafter", "bad utf-8 \ufffd\ufffd here", "the last line"]


def _processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in (process.info["cmdline"] or [])):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


SLEEPER = """
import subprocess, sys, time
marker = "{marker}"
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
print("ready", flush=True)
time.sleep(300)
"""


def test_cancel_kills_the_whole_process_group(live_system, admin_api, engine_token):
    marker = f"sleeper-{uuid.uuid4().hex}"
    workflow = publish(admin_api, {"main.py": SLEEPER.format(marker=marker)}, workflow="sleeper")
    with live_system.api(engine_token) as api:
        execution = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        wait_for(lambda: "ready" in [e["message"] for e in events_of(api, execution["id"])], timeout=45,
                 message="the entrypoint to start")
        assert _processes_with(marker), "the grandchild should be running"
        cancelled = api.post(f"/executions/{execution['id']}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        wait_for(lambda: not _processes_with(marker), timeout=20, message="the process group to die")
        again = api.post(f"/executions/{execution['id']}/cancel")
        assert again.status_code == 409 and again.json()["error"] == "execution_finished"
        body = api.get(f"/executions/{execution['id']}").json()
        types = [e["type"] for e in events_of(api, execution["id"])]
    assert body["status"] == "cancelled" and "cancel_requested" in types and "exited" not in types


def test_timeout_is_enforced_by_the_control_plane(live_system, admin_api, engine_token):
    from workflows.tasks import reap_executions

    marker = f"overdue-{uuid.uuid4().hex}"
    workflow = publish(admin_api, {"main.py": SLEEPER.format(marker=marker)}, workflow="overdue", timeout_sec=2)
    with live_system.api(engine_token) as api:
        execution = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        wait_for(lambda: "ready" in [e["message"] for e in events_of(api, execution["id"])], timeout=45,
                 message="the entrypoint to start")

        def reaped():
            reap_executions.delay()
            return api.get(f"/executions/{execution['id']}").json()["status"] == "timed_out"

        wait_for(reaped, timeout=20, interval=1.0, message="the reaper to time the execution out")
        wait_for(lambda: not _processes_with(marker), timeout=20, message="the process group to die")
        events = events_of(api, execution["id"])
    timed_out = next(e for e in events if e["type"] == "timed_out")
    assert timed_out["data"]["timeout_sec"] == 2


def test_swarmctl_run_follow_prints_events_and_exits_with_the_code(live_system, admin_api, engine_token):
    import subprocess
    import sys

    publish(admin_api, {"main.py": "import os, sys\nprint('hi ' + os.environ['WHO'])\nsys.exit(3)\n"},
            workflow="ctl")
    result = subprocess.run(
        [sys.executable, "-m", "swarm_agent.cli_ctl", "run", "acme/ctl", "--env", "WHO=there", "--follow"],
        env={"PATH": os.environ["PATH"], "SWARM_URL": live_system.url, "SWARM_TOKEN": engine_token},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["hi there"]
    for stage in ("[spawn_requested]", "[bundle_cache_miss]", "[bundle_fetched]", "[bundle_verified]",
                  "[started]", "[exited] exited with code 3"):
        assert stage in result.stderr, result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "swarm_agent.cli_ctl", "run", "acme/nope"],
        env={"PATH": os.environ["PATH"], "SWARM_URL": live_system.url, "SWARM_TOKEN": engine_token},
        capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode != 0 and "no workflow acme/nope" in missing.stderr


NETWORK_PROBE = """
import socket
for host, port in (("127.0.0.1", {port}), ("{s3_host}", {s3_port})):
    try:
        socket.create_connection((host, port), timeout=2).close()
        print("reachable", host, port)
    except OSError as error:
        print("blocked", host, port, type(error).__name__)
"""


def test_the_sandbox_reaches_only_the_control_plane_and_bundle_store_through_relays(live_system, admin_api,
                                                                                  engine_token, s3_server):
    from urllib.parse import urlsplit

    port = urlsplit(live_system.url).port
    s3 = urlsplit(s3_server.endpoint_url)
    workflow = publish(admin_api, {"main.py": NETWORK_PROBE.format(port=port, s3_host=s3.hostname,
                                                                   s3_port=s3.port)}, workflow="netprobe")
    with live_system.api(engine_token) as api:
        execution = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        finished = wait_finished(api, execution["id"])
        events = events_of(api, execution["id"])
    assert finished["status"] == "succeeded", events
    runtime = next(e for e in events if e["type"] == "runtime_started")
    assert runtime["data"]["sandbox"] == "bwrap"
    output = [e["message"] for e in events if e["type"] == "output"]
    # The boot itself fetched the bundle and reported all of this through the relays ...
    assert {"bundle_fetched", "started", "exited"} <= {e["type"] for e in events}
    # ... while the entrypoint has no direct route to either endpoint.
    assert output == [f"blocked 127.0.0.1 {port} ConnectionRefusedError",
                      f"blocked {s3.hostname} {s3.port} ConnectionRefusedError"], output


def test_the_sandbox_has_no_capabilities_and_a_read_only_system(live_system, admin_api, engine_token):
    probe = (
        "import os\n"
        "status = open('/proc/self/status').read()\n"
        "print('CapEff', status.split('CapEff:')[1].split()[0])\n"
        "for path in ('/usr/probe', '/etc/passwd', '/opt/workflow/probe', '/tmp/probe'):\n"
        "    try:\n"
        "        open(path, 'a').close(); print('writable', path)\n"
        "    except OSError as error:\n"
        "        print('read-only', path)\n"
        "print('project visible', os.path.exists(%r))\n" % str(live_system.cache_dir.parent)
    )
    workflow = publish(admin_api, {"main.py": probe}, workflow="caps")
    with live_system.api(engine_token) as api:
        execution = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        assert wait_finished(api, execution["id"])["status"] == "succeeded"
        output = [e["message"] for e in events_of(api, execution["id"]) if e["type"] == "output"]
    assert output == ["CapEff 0000000000000000", "read-only /usr/probe", "read-only /etc/passwd",
                      "writable /opt/workflow/probe", "writable /tmp/probe", "project visible False"], output


def test_the_entrypoint_cannot_read_the_metadata_token_from_proc(live_system, admin_api, engine_token):
    probe = (
        "import os\n"
        "found, refused = [], 0\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        entries = open(f'/proc/{pid}/environ', 'rb').read().split(b'\\0')\n"
        "        if any(e.startswith(b'SWARM_METADATA_TOKEN=') or b'=swm_' in e for e in entries):\n"
        "            found.append(pid)\n"
        "    except OSError:\n"
        "        refused += 1\n"
        "print('token found in', found, 'refused', refused > 0)\n"
        "print('token file left', os.path.exists('/run/swarm-token/metadata-token'))\n"
    )
    workflow = publish(admin_api, {"main.py": probe}, workflow="environ")
    with live_system.api(engine_token) as api:
        execution = api.post(f"/workflows/{workflow.pk}/executions", json={}).json()
        assert wait_finished(api, execution["id"])["status"] == "succeeded"
        output = [e["message"] for e in events_of(api, execution["id"]) if e["type"] == "output"]
    assert output == ["token found in [] refused True", "token file left False"], output


MEMORY_HOG = """
import time
hog = bytearray(160 * 1024 * 1024)
print("allocated", flush=True)
time.sleep(60)
"""


def test_an_execution_over_its_memory_limit_is_killed_and_fails(live_system, admin_api, engine_token):
    workflow = publish(admin_api, {"main.py": MEMORY_HOG}, memory_mb=64)
    with live_system.api(engine_token) as api:
        spawned = api.post(f"/workflows/{workflow.pk}/executions", json={})
        assert spawned.status_code == 202, spawned.text
        finished = wait_finished(api, spawned.json()["id"])
        exited = [event for event in events_of(api, finished["id"]) if event["type"] == "exited"]
    assert finished["status"] == "failed" and finished["exit_code"] == 137, finished
    assert exited[-1]["data"]["memory_exceeded"] is True and exited[-1]["data"]["peak_resident_mb"] > 64
    assert "64 MiB limit" in exited[-1]["message"]
