"""(d) The drone runtime end to end: spawn → first output line through a real drone, against the process runtime.

Starts what a control plane needs on 127.0.0.1 (PostgreSQL/Redis unless
configured, SeaweedFS as S3, uvicorn, one Celery worker) and one real drone
(`swarm-agent run`, WebSocket up, bubblewrap when present), uploads a small
workflow (a 1 MiB bundle whose main.py prints one line) and spawns it
through the API, alternating `{"runtime": "drone"}` and `{"runtime":
"process"}` so both meet the same machine load:

* drone: spawn → Celery provisions (queues it) → `execution_available` over the
  drone's WebSocket → `execution_claim` → `execution_start` → the agent
  starts the supervisor → bwrap → `swarm-agent boot` → first output;
* process (the baseline in the same run): spawn → Celery starts the same
  supervisor and boot on the control plane's host → first output.

Both boots use a warm bundle cache (each runtime's own, filled by a first
unmeasured run), so the difference is the dispatch through the drone. First
output is the `output` event's server time minus the spawn request's. Prints
JSON as the last line: p50/p99 of each and the ratio drone/process.

    .venv/bin/python bench/drone.py [--runs 20]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BASE_DIR, Server, log, percentile, prepare_environment  # noqa: E402
from microvm import make_bundle  # noqa: E402  (bench/microvm.py: the same 1 MiB first-line workflow)


def at(event: dict) -> float:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def run_one(api, workflow_id: int, runtime: str, timeout: float = 120) -> dict:
    """Spawn one execution on `runtime`; seconds from the spawn request to the claim and to the first output."""
    spawned_at = time.time()
    response = api.post(f"/workflows/{workflow_id}/executions", json={"runtime": runtime})
    response.raise_for_status()
    execution_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = api.get(f"/executions/{execution_id}/events").json()
        if page["finished"]:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"execution {execution_id} did not finish")
    events = page["events"]
    if page["status"] != "succeeded":
        raise RuntimeError(f"execution {execution_id} {page['status']}: {json.dumps(events)[-2000:]}")
    started = next(e for e in events if e["type"] == "runtime_started")
    output = next(e for e in events if e["type"] == "output")
    return {"runtime_started": at(started) - spawned_at, "first_output": at(output) - spawned_at,
            "drone": started["data"].get("drone"), "sandbox": started["data"].get("sandbox")}


def summarise(runs: list[dict]) -> dict:
    figures = {"runs": len(runs)}
    for stage in ("runtime_started", "first_output"):
        values = [run[stage] for run in runs]
        figures[f"{stage}_p50_s"] = round(statistics.median(values), 3)
        figures[f"{stage}_p99_s"] = round(percentile(values, 0.99), 3)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="measured executions per runtime")
    args = parser.parse_args()
    started = time.monotonic()

    from swarm.embedded import start_seaweedfs

    work = Path(os.environ.get("SWARM_BENCH_DIR") or BASE_DIR / "var" / "bench" / f"drone-{os.getpid()}")
    s3 = start_seaweedfs(work / "s3", work / "s3-logs", bucket="bench-drone")
    os.environ.update({
        "SWARM_S3_BUCKET": s3.bucket, "SWARM_S3_ENDPOINT_URL": s3.endpoint_url, "SWARM_S3_ACCESS_KEY": s3.access_key,
        "SWARM_S3_SECRET_KEY": s3.secret_key, "SWARM_S3_REGION": s3.region, "SWARM_LOG_LEVEL": "WARNING",
        "SWARM_PROCESS_RUNTIME_DIR": str(work / "executions"), "SWARM_PROCESS_CACHE_DIR": str(work / "cache"),
    })
    children: list[subprocess.Popen] = []
    try:
        prepare_environment("drone")
        server = Server(workers=1)
        env = dict(os.environ, SWARM_PUBLIC_URL=server.url)
        worker_log = open(work / "worker.log", "ab")  # noqa: SIM115 - the worker's own
        children.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "swarm", "worker", "--pool", "threads", "--concurrency", "4",
             "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"], cwd=BASE_DIR,
            env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True))

        import httpx

        from drones.models import Drone
        from drones.services import join_token_issue
        from swarm.core.services import api_token_issue
        from workflows.models import Tenant, Workflow

        _, join = join_token_issue(name="bench-drone")
        agent_log = open(work / "agent.log", "ab")  # noqa: SIM115 - the agent's own
        children.append(subprocess.Popen(
            [sys.executable, "-m", "swarm_agent.cli_agent", "run", "--server", server.url, "--state-dir",
             str(work / "agent"), "--name", "bench-drone", "--join-token", join, "--labels", "bench",
             "--log-level", "WARNING"], env=dict(env, SWARM_AGENT_BUILD_POLL_INTERVAL="60"),
            stdout=agent_log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 60
        while not Drone.objects.filter(name="bench-drone", ws_connected=True).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the drone did not connect")
            time.sleep(0.2)

        Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
        _, admin = api_token_issue(scope="admin", name="bench-drone")
        api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {admin}"},
                           timeout=60)
        uploaded = api.post("/bundles", data={"tenant": "bench", "workflow": "first-line", "version": "1.0.0"},
                            files={"bundle": ("bundle.tar.gz", make_bundle())})
        uploaded.raise_for_status()
        workflow_id = uploaded.json()["workflow_id"]
        Workflow.objects.filter(pk=workflow_id).update(drone_labels=["bench"])
        load_before = os.getloadavg()
        log("warming both bundle caches")
        warm = {"drone": run_one(api, workflow_id, "drone"), "process": run_one(api, workflow_id, "process")}
        log(f"{args.runs} executions per runtime, alternating")
        runs = {"drone": [], "process": []}
        for _ in range(args.runs):
            for runtime in ("drone", "process"):
                runs[runtime].append(run_one(api, workflow_id, runtime))
        drone, process = summarise(runs["drone"]), summarise(runs["process"])
        figures = {
            "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
            "drone_sandbox": warm["drone"]["sandbox"],
            "drone": drone, "process": process,
            "drone_over_process_first_output_p50": round(drone["first_output_p50_s"] / process["first_output_p50_s"], 2),
            "drone_dispatch_p50_s": round(drone["first_output_p50_s"] - process["first_output_p50_s"], 3),
            "total_s": round(time.monotonic() - started, 1),
        }
        print(json.dumps(figures))
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
