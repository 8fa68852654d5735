"""MicroVM executions end to end: cold and warm boots to the first output line, and 8 concurrent VMs of one bundle.

Starts what a control plane needs on 127.0.0.1 (PostgreSQL/Redis unless
configured, SeaweedFS as S3 behind a byte-counting proxy, uvicorn, one
Celery worker) and spawns executions of a small workflow (a 1 MiB bundle
whose main.py prints one line) through the API on the `microvm` runtime,
exactly as `swarmctl run --runtime microvm` does. The image is the one
`make microvm-image` builds (built here when missing).

(a) cold boots (the host bundle cache emptied before each): spawn → first
    output line, p50/p99, split into spawn → VM start (QEMU launched by the
    supervisor) → guest init (the guest's PID 1 runs) → agent start (the
    boot is exec'd) → bundle verified → first output, from the supervisor's
    timeline and the events' times (one clock: everything runs here);
(b) warm boots (bundle cached on the host): the same;
(c) 8 concurrent executions of one bundle, cache emptied first: all must
    succeed, and the proxy must see exactly one GET of the bundle.

Target: warm boot → first output p50 < 10 s under TCG on this 2-core
machine. The baseline in the same run is QEMU alone booting the same kernel
and initramfs to the initramfs's first line (3 boots, median): what
emulation costs on this machine at that moment (the machine is shared, so
the load average before and after is printed too); the split shows the
guest's own share apart from what Swarm adds. Prints JSON as the last line; stops by
itself (a time budget cuts the boot counts short and says so).

    .venv/bin/python bench/microvm.py [--cold 20] [--warm 10] [--concurrent 8] [--budget 280]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))
from harness import BASE_DIR, Server, log, percentile, prepare_environment  # noqa: E402
from proxy import CountingProxy  # noqa: E402

ENTRYPOINT = "print('first output', flush=True)\n"
PAYLOAD_BYTES = 1024 * 1024


def make_bundle() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        for name, data in (("main.py", ENTRYPOINT.encode()), ("payload.bin", os.urandom(PAYLOAD_BYTES))):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def at(event: dict) -> float:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def run_one(api, workflow_id: int, timeout: float = 300) -> dict:
    """Spawn one microVM execution and return its split (seconds since the spawn request)."""
    spawned_at = time.time()
    response = api.post(f"/workflows/{workflow_id}/executions", json={"runtime": "microvm"})
    response.raise_for_status()
    execution_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    events: list[dict] = []
    while time.monotonic() < deadline:
        page = api.get(f"/executions/{execution_id}/events").json()
        events = page["events"]
        if page["finished"] and any(e["type"] == "runtime_exited" for e in events):
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"execution {execution_id} did not finish: {[e['type'] for e in events]}")
    if page["status"] != "succeeded":
        raise RuntimeError(f"execution {execution_id} {page['status']}: {json.dumps(events)[-3000:]}")
    exited = next(e for e in events if e["type"] == "runtime_exited")["data"]
    timeline, supervisor_started = exited["timeline"], exited["started_at"]
    first_output = next(e for e in events if e["type"] == "output")
    verified = next(e for e in events if e["type"] == "bundle_verified")
    return {
        "execution_id": execution_id,
        "vm_start": supervisor_started + timeline["vm_started"] - spawned_at,
        "guest_init": supervisor_started + timeline["guest_init"] - spawned_at,
        "agent_start": supervisor_started + timeline["agent_start"] - spawned_at,
        "bundle_verified": at(verified) - spawned_at,
        "first_output": at(first_output) - spawned_at,
        "host_cache": exited.get("host_cache", {}),
        "accelerator": exited.get("accelerator"),
        "guest_cache_hit": any(e["type"] == "bundle_cache_hit" for e in events),
    }


def summarise(runs: list[dict]) -> dict:
    figures = {"boots": len(runs)}
    for stage in ("vm_start", "guest_init", "agent_start", "bundle_verified", "first_output"):
        values = [run[stage] for run in runs]
        figures[f"{stage}_p50_s"] = round(statistics.median(values), 2)
        figures[f"{stage}_p99_s"] = round(percentile(values, 0.99), 2)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=20, help="cold boots (host bundle cache emptied before each)")
    parser.add_argument("--warm", type=int, default=10, help="warm boots (bundle cached)")
    parser.add_argument("--concurrent", type=int, default=8, help="concurrent executions of one bundle")
    parser.add_argument("--budget", type=float, default=150,
                        help="seconds for the cold and warm loops (60%% / 40%%) before they are cut short")
    args = parser.parse_args()
    started = time.monotonic()

    from swarm.embedded import start_seaweedfs

    work = Path(os.environ.get("SWARM_BENCH_DIR") or BASE_DIR / "var" / "bench" / f"microvm-{os.getpid()}")
    s3 = start_seaweedfs(work / "s3", work / "s3-logs", bucket="bench-microvm")
    # The control plane presigns for the proxy's address; the proxy passes that Host on, counting bundle GETs.
    proxy = CountingProxy(s3.endpoint_url, keep_host=True, count_marker="/bundles/")
    image_dir = os.environ.setdefault("SWARM_MICROVM_IMAGE_DIR", str(BASE_DIR / "var" / "microvm"))
    os.environ.update({
        "SWARM_S3_BUCKET": s3.bucket, "SWARM_S3_ENDPOINT_URL": proxy.base, "SWARM_S3_ACCESS_KEY": s3.access_key,
        "SWARM_S3_SECRET_KEY": s3.secret_key, "SWARM_S3_REGION": s3.region, "SWARM_LOG_LEVEL": "WARNING",
        "SWARM_PROCESS_RUNTIME_DIR": str(work / "executions"), "SWARM_PROCESS_CACHE_DIR": str(work / "cache"),
    })
    worker = None
    try:
        prepare_environment("microvm")
        from swarm_agent.microvm.image import build_image

        log("making sure the microVM image is built")
        image = build_image(image_dir, log=lambda line: None)
        from swarm_agent.microvm.vm import probe_boot

        # The baseline in the same run: QEMU alone booting the same kernel and initramfs to the initramfs's
        # marker (no root disk, no agent, no control plane) — what emulation costs on this machine right now.
        floors = []
        for _ in range(3):
            floor_started = time.monotonic()
            if probe_boot(image, "tcg", 300)[0]:
                floors.append(time.monotonic() - floor_started)
        qemu_floor = statistics.median(floors) if floors else None
        load_before = os.getloadavg()
        server = Server(workers=1)
        worker_log = open(work / "worker.log", "ab")  # noqa: SIM115 - the worker's own
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "swarm", "worker", "--pool", "threads", "--concurrency",
             str(max(4, args.concurrent)), "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
             "--without-heartbeat"], cwd=BASE_DIR, env=dict(os.environ, SWARM_PUBLIC_URL=server.url),
            stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)

        import httpx

        from swarm.core.services import api_token_issue
        from workflows.models import Tenant, Workflow

        Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
        _, admin = api_token_issue(scope="admin", name="bench-microvm")
        api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {admin}"},
                           timeout=60)
        bundle = make_bundle()
        uploaded = api.post("/bundles", data={"tenant": "bench", "workflow": "first-line", "version": "1.0.0"},
                            files={"bundle": ("bundle.tar.gz", bundle)})
        uploaded.raise_for_status()
        workflow_id = uploaded.json()["workflow_id"]
        Workflow.objects.filter(pk=workflow_id).update(memory_mb=128)
        cache = work / "cache" / "bundles"

        def empty_cache():
            shutil.rmtree(cache, ignore_errors=True)

        loop_deadline = time.monotonic() + args.budget * 0.6
        log(f"(a) {args.cold} cold boots")
        cold = []
        for _ in range(args.cold):
            if time.monotonic() > loop_deadline:
                break
            empty_cache()
            cold.append(run_one(api, workflow_id))
        log(f"(b) {args.warm} warm boots")
        loop_deadline = time.monotonic() + args.budget * 0.4
        warm = []
        for _ in range(args.warm):
            if time.monotonic() > loop_deadline:
                break
            warm.append(run_one(api, workflow_id))

        log(f"(c) {args.concurrent} concurrent executions of one bundle")
        empty_cache()
        gets_before, bytes_before = proxy.requests, proxy.bytes_sent
        concurrent, failures = [], []

        def one():
            try:
                with httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {admin}"},
                                  timeout=60) as client:
                    concurrent.append(run_one(client, workflow_id, timeout=600))
            except Exception as exc:  # noqa: BLE001 - counted as a failure
                failures.append(str(exc)[:500])

        concurrent_started = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(args.concurrent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent_seconds = time.monotonic() - concurrent_started
        downloads = proxy.requests - gets_before

        figures = {
            "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
            "qemu_floor_kernel_to_initramfs_s": round(qemu_floor, 2) if qemu_floor else None,
            "accelerator": (cold or warm or concurrent or [{}])[0].get("accelerator"),
            "image": image.key, "kernel": image.manifest["kernel_release"], "bundle_bytes": len(bundle),
            "cold": summarise(cold) if cold else None,
            "warm": summarise(warm) if warm else None,
            "cut_short_by_budget": len(cold) < args.cold or len(warm) < args.warm,
            "concurrent": {
                "executions": args.concurrent, "succeeded": len(concurrent), "failures": failures[:3],
                "bundle_downloads": downloads, "bundle_bytes_fetched": proxy.bytes_sent - bytes_before,
                "all_guests_hit_the_shared_cache": all(run["guest_cache_hit"] for run in concurrent),
                "wall_s": round(concurrent_seconds, 1),
                "first_output_p50_s": round(statistics.median(r["first_output"] for r in concurrent), 2)
                if concurrent else None,
            },
            "total_s": round(time.monotonic() - started, 1),
        }
        if qemu_floor and warm:
            figures["warm_first_output_over_qemu_floor"] = round(figures["warm"]["first_output_p50_s"] / qemu_floor, 2)
        figures["targets_met"] = {
            "warm_first_output_p50_under_10s": bool(warm) and figures["warm"]["first_output_p50_s"] < 10,
            "concurrent_all_succeed_one_download": len(concurrent) == args.concurrent and downloads == 1,
        }
        print(json.dumps(figures))
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            import signal

            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        proxy.stop()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
