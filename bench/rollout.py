"""A rollout of one payload version to 500 simulated drones, and an auto-revert of a bad one.

Starts SeaweedFS (S3) and uvicorn on 127.0.0.1, a real Celery worker and
beat, and `--drones` simulated agents in this process. Each simulated agent
is the real agent plugin (`swarm_agent.plugins.payloads`: the verified
bundle cache, safe unpack, atomic switch, health check, coalesced HTTP
reports) behind a minimal daemon: its own drone token, its own WebSocket to
`/ws/agent/` (deploy commands arrive there; pings are answered), its own
payload directory under a temp dir.

Phase 1: `--max-parallel 50`, `--canary 5`, auto_promote, min_healthy_time
`--min-healthy-time`. Measured: wall time from `POST /rollouts` to
`succeeded`, against the ideal `ceil(drones / max_parallel)` waves × (the
per-drone apply time measured first, through the same installer, + the
min_healthy_time); control-plane CPU (uvicorn + Celery worker + beat +
the PostgreSQL backends of this run's database) per drone; event rows;
then every agent heartbeats its `payload_hashes` and the drift check runs:
drifted drones must be 0.

Phase 2: a second version whose health check fails on `--failing` drones
(the first ones in the rollout), failure budget 5, auto_revert: time from
start to `reverted`, how many drones were reverted, and again drift 0.

    .venv/bin/python bench/rollout.py [--drones 500] [--max-parallel 50] [--canary 5] [--min-healthy-time 1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))
from cpu import tree_seconds  # noqa: E402
from harness import BASE_DIR, Server, log, prepare_environment  # noqa: E402

from swarm.embedded import start_seaweedfs  # noqa: E402


def postgres_backend_seconds(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving `database` (their process titles name it).

    The machine's PostgreSQL may serve others at the same time; only this run's connections count.
    """
    import psutil

    total = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if process.info["name"] not in ("postgres", "postgresql"):
                continue
            if database not in " ".join(process.info["cmdline"] or []):
                continue
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


class SimApi:
    """The slice of the agent's `httpx.AsyncClient` the payload plugin uses, with this drone's token."""

    def __init__(self, client, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **kwargs):
        return await self.client.get(path, headers=self.headers, **kwargs)

    async def post(self, path: str, **kwargs):
        return await self.client.post(path, headers=self.headers, **kwargs)


class SimAgent:
    """One simulated drone: the real payload plugin, a WebSocket and an HTTP identity."""

    def __init__(self, name: str, token: str, root: Path, client, ws_url: str):
        from swarm_agent.plugins.payloads import PayloadsPlugin

        self.name, self.token, self.root = name, token, root
        self.api = SimApi(client, token)
        self.daemon = SimpleNamespace(config=SimpleNamespace(state_dir=root, name=name, capacity=1), api=self.api,
                                      ws_connected=False, action="run", stop=lambda: None)
        self.plugin = PayloadsPlugin(self.daemon, payload_root=root / "payloads", cache_dir=root / "cache",
                                     poll_interval=3600, agent_argv=[])
        self.ws_url = ws_url
        self.deploys = 0

    async def heartbeat(self) -> None:
        response = await self.api.post("/drones/heartbeat", json={"metrics": {}, **self.plugin.heartbeat_fields()})
        response.raise_for_status()

    async def run_websocket(self, connected: asyncio.Event) -> None:
        from websockets.asyncio.client import connect

        async with connect(self.ws_url, additional_headers={"Authorization": f"Bearer {self.token}"},
                           open_timeout=60, ping_interval=None, max_size=16 * 1024 * 1024) as socket:
            self.daemon.ws_connected = True
            connected.set()
            async for raw in socket:
                message = json.loads(raw)
                if message.get("type") == "ping":
                    await socket.send(json.dumps({"type": "pong", "id": message.get("id")}))
                elif message.get("type") == "deploy_payload":
                    self.deploys += 1
                    await self.plugin.on_ws_message(message)


def make_payload(directory: Path, label: str) -> Path:
    """A small real payload: a few config files and a script (about 40 KiB)."""
    (directory / "etc").mkdir(parents=True, exist_ok=True)
    (directory / "bin").mkdir(exist_ok=True)
    (directory / "etc" / "make.conf").write_text(f'# {label}\nCFLAGS="-O2 -pipe"\nMAKEOPTS="-j4"\n')
    (directory / "etc" / "binhost.conf").write_text("\n".join(f"binhost{n} = https://binhost-{n}.example/{label}"
                                                              for n in range(400)))
    script = directory / "bin" / "check"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return directory


def push(client, directory: Path, version: str) -> dict:
    import httpx

    from swarm_agent.packing import pack_directory

    packed = pack_directory(directory, directory.parent / f"{directory.name}.tar.gz")
    with open(packed.path, "rb") as handle:
        answer = client.post("/payload-versions", data={"type": "toolchain", "version": version},
                             files={"bundle": ("payload.tar.gz", handle, "application/gzip")})
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"push failed: {answer.status_code} {answer.text}")
    assert isinstance(client, httpx.Client)
    return answer.json()


def measure_apply(version: dict, work: Path, samples: int = 5) -> float:
    """Median seconds one drone takes to apply the payload (cold cache, fetch from S3, unpack, switch)."""
    from drones.payloads.engine import deploy_message
    from drones.payloads.models import PayloadVersion, RolloutTarget
    from swarm_agent.payloads.install import PayloadInstaller

    payload_version = PayloadVersion.objects.select_related("payload_type", "bundle").get(pk=version["id"])
    command = deploy_message(RolloutTarget(pk=0, rollout_id=0, payload_version=payload_version))
    timings = []
    for sample in range(samples):
        installer = PayloadInstaller(payload_root=work / f"apply-{sample}" / "payloads",
                                     cache_dir=work / f"apply-{sample}" / "cache")
        started = time.perf_counter()
        result = installer.apply(command, lambda state, reason: None)
        timings.append(time.perf_counter() - started)
        if not result.ok:
            raise RuntimeError(result.reason)
    return statistics.median(timings)


def wait_rollout(rollout_id: int, states: set[str], timeout: float) -> str:
    from drones.payloads.models import Rollout

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Rollout.objects.filter(pk=rollout_id).values_list("state", flat=True).first()
        if state in states:
            return state
        time.sleep(0.1)
    raise RuntimeError(f"rollout {rollout_id} did not reach {states} in {timeout:g} s")


def latency_breakdown(rollout_id: int) -> dict:
    """Medians (ms) of the steps one drone goes through, from the event rows' timestamps."""
    from drones.payloads.models import PayloadEvent, Rollout

    steps: dict[int, dict] = {}
    for target_id, kind, to_state, detail, at in PayloadEvent.objects.filter(
            rollout_id=rollout_id, target__isnull=False).values_list("target_id", "kind", "to_state", "detail", "at"):
        row = steps.setdefault(target_id, {})
        if kind == "dispatch":
            row.setdefault("dispatched", at)
        elif kind == "target" and to_state in ("downloading", "installing") and "reported" not in row:
            row["reported"] = at
        elif kind == "target" and to_state == "verifying" and detail.startswith("healthy"):
            row["healthy"] = at
        elif kind == "target" and to_state == "succeeded":
            row["succeeded"] = at

    def median_ms(first: str, second: str) -> float | None:
        values = [(row[second] - row[first]).total_seconds() * 1000 for row in steps.values()
                  if first in row and second in row]
        return round(statistics.median(values), 1) if values else None

    successes = sorted(row["succeeded"] for row in steps.values() if "succeeded" in row)
    dispatches = sorted(row["dispatched"] for row in steps.values() if "dispatched" in row)
    turnover = []
    for done in successes:  # from a drone counting as healthy to the next drone being sent the deploy
        later = [at for at in dispatches if at >= done]
        if later:
            turnover.append((later[0] - done).total_seconds() * 1000)
    return {"dispatch_to_first_report_ms": median_ms("dispatched", "reported"),
            "first_report_to_healthy_ms": median_ms("reported", "healthy"),
            "healthy_to_succeeded_ms": median_ms("healthy", "succeeded"),
            "succeeded_to_next_dispatch_ms": round(statistics.median(turnover), 1) if turnover else None,
            "engine_steps": Rollout.objects.get(pk=rollout_id).ticks}


def target_counts(rollout_id: int) -> dict[str, int]:
    from django.db.models import Count

    from drones.payloads.models import RolloutTarget

    return dict(RolloutTarget.objects.filter(rollout_id=rollout_id).values("state").annotate(n=Count("id"))
                .values_list("state", "n"))


class ControlPlaneCpu:
    """CPU seconds of uvicorn, the Celery worker and beat, and this database's PostgreSQL backends."""

    def __init__(self, processes: list, database: str):
        self.processes = processes
        self.database = database

    def by_process(self) -> dict:
        names = ("uvicorn", "celery_worker", "celery_beat")
        return {name: tree_seconds(process.pid) for name, process in zip(names, self.processes)}

    def read(self) -> dict:
        return {"server_worker_beat": sum(tree_seconds(process.pid) for process in self.processes),
                "postgres": postgres_backend_seconds(self.database)}


def spawn_celery(argv: list[str], log_path: Path) -> subprocess.Popen:
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "swarm", *argv], cwd=BASE_DIR, env=dict(os.environ),
                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


async def main_async(args, server_url: str, admin_token: str, tokens: dict[str, str], work: Path,
                     cpu: ControlPlaneCpu) -> dict:
    import httpx

    from drones.payloads.drift import drift_check
    from drones.payloads.models import DronePayloadState, PayloadEvent, PayloadType, RolloutTarget

    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=args.max_parallel + 16))
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    client = httpx.AsyncClient(base_url=f"{server_url}/api/v1", limits=limits, timeout=60)
    ws_url = server_url.replace("http://", "ws://") + "/ws/agent/"
    agents = [SimAgent(name, token, work / "drones" / name, client, ws_url) for name, token in tokens.items()]
    connected = [asyncio.Event() for _ in agents]
    sockets = []
    for index, agent in enumerate(agents):  # connect in small batches: the server records each connect
        sockets.append(asyncio.ensure_future(agent.run_websocket(connected[index])))
        if index % 50 == 49:
            await asyncio.gather(*(event.wait() for event in connected[index - 49:index + 1]))
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in connected)), timeout=120)
    for chunk in range(0, len(agents), 50):
        await asyncio.gather(*(agent.heartbeat() for agent in agents[chunk:chunk + 50]))
    log(f"{len(agents)} simulated agents connected and heartbeating")

    admin = httpx.Client(base_url=f"{server_url}/api/v1", headers={"Authorization": f"Bearer {admin_token}"},
                         timeout=120)
    v1 = await asyncio.to_thread(push, admin, make_payload(work / "payload-v1", "v1"), "1.0.0")
    apply_seconds = await asyncio.to_thread(measure_apply, v1, work / "apply")
    log(f"per-drone apply time (median of 5, cold cache): {apply_seconds * 1000:.1f} ms")

    def rollout(**body) -> int:
        answer = admin.post("/rollouts", json={"payload_type": "toolchain", "target": {"all": True},
                                               "max_parallel": args.max_parallel, "healthy_deadline": 120,
                                               "progress_deadline": 300, **body})
        if answer.status_code != 202:
            raise RuntimeError(answer.text)
        return answer.json()["id"]

    async def heartbeat_all() -> None:
        for chunk in range(0, len(agents), 50):
            await asyncio.gather(*(agent.heartbeat() for agent in agents[chunk:chunk + 50]))

    # The fleet at rest (500 WebSockets open, beat ticking, nothing deploying): the baseline of the same run.
    idle_before, idle_by, idle_started = cpu.read(), cpu.by_process(), time.perf_counter()
    await asyncio.sleep(args.idle_seconds)
    idle_after, idle_seconds = cpu.read(), time.perf_counter() - idle_started
    idle_by = {name: round((seconds - idle_by[name]) / idle_seconds, 4) for name, seconds in cpu.by_process().items()}
    idle_by["postgres"] = round((idle_after["postgres"] - idle_before["postgres"]) / idle_seconds, 4)
    idle_rate = (sum(idle_after.values()) - sum(idle_before.values())) / idle_seconds

    # Phase 1 ------------------------------------------------------------------------------------------
    before = cpu.read()
    before_by = cpu.by_process()
    started = time.perf_counter()
    rollout_id = await asyncio.to_thread(rollout, version="1.0.0", canary=args.canary, auto_promote=True,
                                         min_healthy_time=args.min_healthy_time)
    state = await asyncio.to_thread(wait_rollout, rollout_id, {"succeeded", "failed", "reverted"}, 600)
    wall = time.perf_counter() - started
    after = cpu.read()
    after_by = cpu.by_process()
    control_cpu = {key: after[key] - before[key] for key in after}
    waves = math.ceil(len(agents) / args.max_parallel)
    ideal = waves * (apply_seconds + args.min_healthy_time)
    events = await asyncio.to_thread(lambda: PayloadEvent.objects.filter(rollout_id=rollout_id).count())
    counts = await asyncio.to_thread(target_counts, rollout_id)
    duplicate_sends = sum(max(0, agent.deploys - 1) for agent in agents)
    log(f"phase 1: {state} in {wall:.2f} s (ideal {ideal:.2f} s), {counts}")
    await heartbeat_all()
    report = await asyncio.to_thread(drift_check)
    drifted = await asyncio.to_thread(lambda: DronePayloadState.objects.filter(drifted=True).count())
    in_sync = await asyncio.to_thread(lambda: DronePayloadState.objects.filter(
        reported_sha256=v1["sha256"], desired_version_id=v1["id"]).count())
    phase1 = {
        "state": state, "drones": len(agents), "target_states": counts, "wall_seconds": round(wall, 3),
        "ideal_seconds": round(ideal, 3), "ideal_formula": f"ceil({len(agents)}/{args.max_parallel}) = {waves} "
        f"waves x ({apply_seconds * 1000:.1f} ms apply + {args.min_healthy_time:g} s min_healthy_time)",
        "ratio_to_ideal": round(wall / ideal, 3), "apply_ms": round(apply_seconds * 1000, 1),
        "control_plane_cpu_seconds": {key: round(value, 3) for key, value in control_cpu.items()},
        "control_plane_cpu_ms_per_drone": round(1000 * sum(control_cpu.values()) / len(agents), 3),
        "idle_control_plane_cpu_per_second": round(idle_rate, 4),
        "idle_cpu_per_second_by_process": idle_by,
        "control_plane_cpu_ms_per_drone_above_idle": round(
            1000 * (sum(control_cpu.values()) - idle_rate * wall) / len(agents), 3),
        "events_written": events, "events_per_drone": round(events / len(agents), 2),
        "latency_breakdown": await asyncio.to_thread(latency_breakdown, rollout_id),
        "cpu_by_process_seconds": {name: round(after_by[name] - before_by[name], 3) for name in after_by},
        "deploy_commands_received_more_than_once": duplicate_sends,
        "drift_after": drifted, "drones_in_sync_after": in_sync, "drift_check_changes": report.changed,
    }

    # Phase 2 ------------------------------------------------------------------------------------------
    failing = sorted(agent.name for agent in agents)[:args.failing]
    for agent in agents:
        if agent.name in failing:
            (agent.root / "FAIL").write_text("this drone fails its health check\n")
    await asyncio.to_thread(lambda: PayloadType.objects.filter(name="toolchain").update(
        health_check="command", health_command="test ! -e ../../../../FAIL && bin/check", health_timeout=10))
    v2 = await asyncio.to_thread(push, admin, make_payload(work / "payload-v2", "v2"), "2.0.0")
    before = cpu.read()
    started = time.perf_counter()
    rollout_id = await asyncio.to_thread(rollout, version="2.0.0", min_healthy_time=args.min_healthy_time,
                                         auto_revert=True, failure_budget=str(args.failure_budget))
    state = await asyncio.to_thread(wait_rollout, rollout_id, {"succeeded", "failed", "reverted"}, 600)
    revert_wall = time.perf_counter() - started
    after = cpu.read()
    counts2 = await asyncio.to_thread(target_counts, rollout_id)
    failed_reasons = await asyncio.to_thread(lambda: RolloutTarget.objects.filter(
        rollout_id=rollout_id, drone__name__in=failing).values_list("reason", flat=True).first())
    await heartbeat_all()
    await asyncio.to_thread(drift_check)
    drifted2 = await asyncio.to_thread(lambda: DronePayloadState.objects.filter(drifted=True).count())
    on_v1 = await asyncio.to_thread(lambda: DronePayloadState.objects.filter(reported_sha256=v1["sha256"]).count())
    log(f"phase 2: {state} in {revert_wall:.2f} s, {counts2}")
    phase2 = {
        "state": state, "failing_drones": len(failing), "failure_budget": args.failure_budget,
        "target_states": counts2, "seconds_to_all_reverted": round(revert_wall, 3),
        "control_plane_cpu_seconds": round(sum(after.values()) - sum(before.values()), 3),
        "a_failing_drone_said": failed_reasons, "drift_after": drifted2, "drones_back_on_v1": on_v1,
        "v2_sha256": v2["sha256"][:16],
    }
    for socket in sockets:
        socket.cancel()
    await client.aclose()
    admin.close()
    return {"phase1": phase1, "phase2": phase2}


def main() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drones", type=int, default=500)
    parser.add_argument("--max-parallel", type=int, default=50)
    parser.add_argument("--canary", type=int, default=5)
    parser.add_argument("--min-healthy-time", type=float, default=1.0)
    parser.add_argument("--failing", type=int, default=10)
    parser.add_argument("--failure-budget", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="baseline: the fleet at rest")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    s3 = start_seaweedfs(work / "s3", work / "s3-logs", bucket="bench-rollout")
    os.environ.update({"SWARM_S3_BUCKET": s3.bucket, "SWARM_S3_ENDPOINT_URL": s3.endpoint_url,
                       "SWARM_S3_ACCESS_KEY": s3.access_key, "SWARM_S3_SECRET_KEY": s3.secret_key,
                       "SWARM_S3_REGION": s3.region,
                       # Heartbeats and pings are not what this bench measures: the fleet heartbeats rarely.
                       "SWARM_DRONE_HEARTBEAT_INTERVAL": "120", "SWARM_DRONE_PING_INTERVAL": "300",
                       "SWARM_ROLLOUT_TICK_INTERVAL": "5", "SWARM_DB_POOL": "1"})
    try:
        database_url = prepare_environment("rollout")
        database = database_url.rsplit("/", 1)[1].split("?")[0]
        from drones.services import drone_register, join_token_issue
        from swarm.core.services import api_token_issue

        _, admin_token = api_token_issue(scope="admin", name="bench")
        _, join = join_token_issue(name="bench-rollout")
        tokens = {}
        for number in range(args.drones):
            registration = drone_register(join_token=join, name=f"sim-{number:04d}", labels=["linux"])
            tokens[registration.drone.name] = registration.token
        log(f"registered {len(tokens)} drones")
        server = Server(workers=1, log_path=work / "uvicorn.log")
        worker = spawn_celery(["worker", "--pool", "threads", "--concurrency", "4", "--loglevel", "WARNING",
                               "--without-gossip", "--without-mingle", "--without-heartbeat"], work / "worker.log")
        beat = spawn_celery(["beat", "--loglevel", "WARNING", "-s", str(work / "beat-schedule")], work / "beat.log")
        cpu = ControlPlaneCpu([server.process, worker, beat], database)
        try:
            result = asyncio.run(main_async(args, server.url, admin_token, tokens, work, cpu))
        finally:
            for process in (worker, beat):
                subprocess.run(["kill", "-TERM", f"-{process.pid}"], check=False)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    subprocess.run(["kill", "-KILL", f"-{process.pid}"], check=False)
            server.stop()
        phase1 = result["phase1"]
        result["targets"] = {
            "wall_time_vs_ideal": {"target": "<= 1.3", "value": phase1["ratio_to_ideal"],
                                   "met": phase1["ratio_to_ideal"] <= 1.3},
            "cpu_ms_per_drone": {"target": "< 5", "value": phase1["control_plane_cpu_ms_per_drone"],
                                 "met": phase1["control_plane_cpu_ms_per_drone"] < 5},
            "final_drift": {"target": 0, "value": phase1["drift_after"] + result["phase2"]["drift_after"],
                            "met": phase1["drift_after"] == 0 and result["phase2"]["drift_after"] == 0},
        }
        print(json.dumps(result))
    finally:
        s3.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
