"""Trigger-to-first-log-line latency with an idle drone, and log ingest throughput.

1. Latency: a real `swarm-agent run` sits idle; each build is triggered
   through the API and timed until the first log byte is readable through
   the API. Measured twice in the same run: with the WebSocket
   `build_available` nudge (the normal path), and as the baseline with the
   agent's WebSocket off, so it only finds work by polling (every 2 s).
   Target: nudged p50 < 1 s.
2. Ingest: one running build receives its log as sequential 1 MiB
   `PATCH /builds/<id>/log` requests with Content-Range; the baseline is raw
   psycopg INSERTs of the same 1 MiB pieces into a table on the same
   database. Target: ≥ 50 MB/s through the API.
3. Streams: `--streams` running builds (one drone each) stream their logs
   at once in `--line-bytes` PATCHes, each build on its own keep-alive
   connection, for `--stream-seconds`: appends/s, latency and CPU per
   append. The baseline does the same database work without HTTP: as many
   threads, each inserting the chunk and moving the attempt's size on in
   one transaction. (No target in the issue; it shows what many small
   appends cost.)

    .venv/bin/python bench/build_latency.py [--builds 15] [--ingest-mib 64] [--streams 100]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))
from harness import BASE_DIR, Server, available_connections, log, percentile, prepare_environment  # noqa: E402


def make_repo(path: Path) -> str:
    path.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "bench@example.com"],
                 ["config", "user.name", "bench"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README").write_text("bench\n")
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "bench"], cwd=path, check=True)
    return f"file://{path}"


def start_agent(server_url: str, state_dir: Path, name: str, *, websocket: bool) -> subprocess.Popen:
    from drones.services import join_token_issue

    _, join = join_token_issue(name=f"join-{name}")
    argv = [sys.executable, "-m", "swarm_agent.cli_agent", "run", "--server", server_url, "--state-dir",
            str(state_dir), "--name", name, "--join-token", join, "--log-level", "WARNING"]
    if not websocket:
        argv.append("--no-websocket")
    log_file = open(state_dir.parent / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(argv, cwd=BASE_DIR, env=dict(os.environ, SWARM_AGENT_BUILD_POLL_INTERVAL="2"),
                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def stop_agent(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_idle_drone(name: str, websocket: bool, timeout: float = 60) -> None:
    from drones.models import Drone

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drone = Drone.objects.filter(name=name, first_heartbeat_at__isnull=False).first()
        if drone and (drone.ws_connected or not websocket):
            return
        time.sleep(0.1)
    raise RuntimeError(f"drone {name} did not come up")


def measure_latency(server_url: str, token: str, job_id: int, builds: int) -> list[float]:
    import httpx

    latencies = []
    with httpx.Client(base_url=f"{server_url}/api/v1", headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as client:
        for _ in range(builds):
            # A random pause puts each trigger at a random point of the polling agent's cycle.
            time.sleep(random.uniform(0.0, 2.0))
            started = time.perf_counter()
            build = client.post(f"/jobs/{job_id}/trigger", json={"branch": "main"}).json()
            while True:
                response = client.get(f"/builds/{build['id']}/log")
                if response.content:
                    latencies.append(time.perf_counter() - started)
                    break
                if time.perf_counter() - started > 30:
                    raise RuntimeError(f"build {build['id']} printed nothing in 30 s")
                time.sleep(0.01)
            # Let the build finish so the drone is idle again before the next trigger.
            while client.get(f"/builds/{build['id']}").json()["state"] not in ("success", "failed", "canceled"):
                time.sleep(0.05)
    return latencies


#: The simulated drones of the ingest and stream measurements run nothing (their builds' steps never run):
#: they report the operator's explicit no-sandbox opt-out, and their jobs ask for no sandbox.
BENCH_SANDBOX = {"mode": "none", "detail": "bench drone: its builds never run"}


def measure_ingest(server_url: str, database_url: str, mebibytes: int) -> dict:
    import httpx
    import psycopg

    from builds.services import build_claim, build_set_running, build_trigger, job_create
    from drones.services import drone_register, join_token_issue

    job = job_create(name="ingest", scm_url="https://git.example.com/ingest.git", build_config={"steps": ["true"], "sandbox": "none"})
    build = build_trigger(job=job, trigger="api")
    _, join = join_token_issue(name="ingest")
    registration = drone_register(join_token=join, name="ingest-drone", sandbox=BENCH_SANDBOX)
    build_claim(drone=registration.drone)
    build_set_running(build_id=build.pk, drone=registration.drone)
    piece = os.urandom(1024 * 1024)
    with httpx.Client(base_url=f"{server_url}/api/v1", timeout=60,
                      headers={"Authorization": f"Bearer {registration.token}",
                               "Content-Type": "text/plain"}) as client:
        offset = 0
        started = time.perf_counter()
        for _ in range(mebibytes):
            response = client.patch(f"/builds/{build.pk}/log", content=piece,
                                    headers={"Content-Range": f"{offset}-{offset + len(piece) - 1}"})
            if response.status_code != 202:
                raise RuntimeError(f"log patch refused: {response.status_code} {response.text[:200]}")
            offset += len(piece)
        api_seconds = time.perf_counter() - started
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("CREATE TEMP TABLE raw_chunks (id bigserial primary key, data bytea)")
        started = time.perf_counter()
        for _ in range(mebibytes):
            connection.execute("INSERT INTO raw_chunks (data) VALUES (%s)", (piece,))
        raw_seconds = time.perf_counter() - started
    megabytes = mebibytes * len(piece) / 1e6
    return {"api_mb_per_s": round(megabytes / api_seconds, 1), "raw_mb_per_s": round(megabytes / raw_seconds, 1),
            "mib": mebibytes}


def running_builds(count: int) -> list[tuple[int, int, str]]:
    """`count` builds, each claimed and running on a drone of its own: (build id, attempt id, drone token)."""
    from builds.models import BuildAttempt
    from builds.services import build_claim, build_set_running, build_trigger, job_create
    from drones.services import drone_register, join_token_issue

    job = job_create(name="streams", scm_url="https://git.example.com/streams.git",
                     build_config={"steps": ["true"], "sandbox": "none"})
    _, join = join_token_issue(name="streams")
    running = []
    for index in range(count):
        build = build_trigger(job=job, trigger="api")
        registration = drone_register(join_token=join, name=f"stream-{index}", sandbox=BENCH_SANDBOX)
        build_claim(drone=registration.drone)
        build_set_running(build_id=build.pk, drone=registration.drone)
        attempt = BuildAttempt.objects.get(build=build, number=1)
        running.append((build.pk, attempt.pk, registration.token))
    return running


def measure_streams(server, database_url: str, streams: int, line_bytes: int, seconds: float) -> dict:
    """Many builds appending small log pieces at once, through the API and as raw SQL (the baseline)."""
    import threading
    from urllib.parse import urlsplit

    import loadgen
    import psycopg
    from cpu import postgres_seconds, tree_seconds

    from django.db import connection

    running = running_builds(streams)
    connection.close()
    line = (b"x" * (line_bytes - 1)) + b"\n"
    port = urlsplit(server.url).port
    latencies: list[float] = []
    sizes: dict[int, int] = {}

    async def stream(build_id: int, token: str, until: float) -> int:
        client = await loadgen.Connection.open("127.0.0.1", port)
        offset = appended = 0
        try:
            while time.perf_counter() < until:
                request = loadgen.render("PATCH", f"/api/v1/builds/{build_id}/log", line, {
                    "Authorization": f"Bearer {token}", "Content-Type": "text/plain",
                    "Content-Range": f"{offset}-{offset + len(line) - 1}"})
                started = time.perf_counter()
                response = await client.request(request)
                latencies.append(time.perf_counter() - started)
                if response.status != 202:
                    raise RuntimeError(f"append refused: {response.status} {response.body[:200]!r}")
                offset += len(line)
                appended += 1
        finally:
            client.close()
        sizes[build_id] = offset
        return appended

    async def all_streams() -> int:
        import asyncio

        until = time.perf_counter() + seconds
        return sum(await asyncio.gather(*(stream(build_id, token, until) for build_id, _, token in running)))

    cpu_before = (tree_seconds(server.process.pid), postgres_seconds())
    started = time.perf_counter()
    appends = loadgen.run(all_streams())
    api_seconds = time.perf_counter() - started
    server_cpu = tree_seconds(server.process.pid) - cpu_before[0]
    api_database_cpu = postgres_seconds() - cpu_before[1]

    # As many raw writers as the database has connections to spare, each taking its builds in turn.
    writers = available_connections(database_url, len(running))
    shares = [running[index::writers] for index in range(writers)]
    raw_counts = [0] * writers
    ready = threading.Barrier(writers + 1, timeout=60)
    finished = threading.Barrier(writers + 1, timeout=seconds + 120)
    release = threading.Event()
    until_holder = [float("inf")]

    def raw_stream(index: int) -> None:
        offsets = {attempt_id: sizes[build_id] for build_id, attempt_id, _ in shares[index]}
        with psycopg.connect(database_url, autocommit=True) as raw:
            ready.wait()
            while time.perf_counter() < until_holder[0]:
                for attempt_id, offset in offsets.items():
                    with raw.transaction():
                        raw.execute('INSERT INTO builds_buildlogchunk (attempt_id, "offset", data) '
                                    "VALUES (%s, %s, %s)", (attempt_id, offset, line))
                        raw.execute("UPDATE builds_buildattempt SET log_size = %s WHERE id = %s",
                                    (offset + len(line), attempt_id))
                    offsets[attempt_id] = offset + len(line)
                    raw_counts[index] += 1
            finished.wait()
            release.wait(120)  # the connection (and its backend's CPU time) stays until it is counted

    threads = [threading.Thread(target=raw_stream, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    database_before = postgres_seconds()
    until_holder[0] = time.perf_counter() + seconds
    ready.wait()
    started = time.perf_counter()
    finished.wait()
    raw_seconds = time.perf_counter() - started
    raw_database_cpu = postgres_seconds() - database_before
    release.set()
    for thread in threads:
        thread.join()
    raw_appends = sum(raw_counts)
    return {
        "streams": streams, "line_bytes": line_bytes,
        "api_appends_per_s": round(appends / api_seconds, 1),
        "api_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "api_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "api_server_cpu_ms_per_append": round(server_cpu * 1000 / max(appends, 1), 3),
        "api_database_cpu_ms_per_append": round(api_database_cpu * 1000 / max(appends, 1), 3),
        "raw_writers": writers,
        "raw_appends_per_s": round(raw_appends / raw_seconds, 1),
        "raw_database_cpu_ms_per_append": round(raw_database_cpu * 1000 / max(raw_appends, 1), 3),
        "ratio": round((appends / api_seconds) / (raw_appends / raw_seconds), 3) if raw_appends else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=15, help="builds per latency series")
    parser.add_argument("--ingest-mib", type=int, default=64)
    parser.add_argument("--streams", type=int, default=100, help="builds streaming their logs at once")
    parser.add_argument("--line-bytes", type=int, default=2048, help="bytes per streamed PATCH")
    parser.add_argument("--stream-seconds", type=float, default=10.0)
    args = parser.parse_args()
    database_url = prepare_environment("latency")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from builds.services import job_create, queues_ensure_defaults
    from swarm.core.services import api_token_issue

    queues_ensure_defaults()
    workdir = Path(tempfile.mkdtemp(prefix="swarm-bench-latency-"))
    repo_url = make_repo(workdir / "repo")
    job = job_create(name="latency", scm_url=repo_url, build_config={"steps": ["echo built"]})
    _, token = api_token_issue(scope="admin", name="bench")
    from django.db import connection

    connection.close()
    server = Server(workers=1, env={"SWARM_DB_POOL": "1", "SWARM_DB_POOL_MAX": "8", "SWARM_LOG_LEVEL": "WARNING"})
    results = {"benchmark": "build_latency"}
    for mode, websocket in (("nudged", True), ("polling_baseline", False)):
        name = f"latency-{mode}"
        agent = start_agent(server.url, workdir / name, name, websocket=websocket)
        try:
            wait_idle_drone(name, websocket)
            time.sleep(1.0)
            log(f"latency, {mode}: {args.builds} builds")
            latencies = measure_latency(server.url, token, job.pk, args.builds)
        finally:
            stop_agent(agent)
        results[f"{mode}_p50_s"] = round(statistics.median(latencies), 3)
        results[f"{mode}_p90_s"] = round(percentile(latencies, 0.9), 3)
        from drones.models import Drone

        Drone.objects.filter(name=name).update(status="offline")
    results["latency_ratio_nudged_vs_polling"] = round(results["nudged_p50_s"] / results["polling_baseline_p50_s"], 3)
    log(f"log ingest: {args.ingest_mib} x 1 MiB")
    ingest = measure_ingest(server.url, database_url, args.ingest_mib)
    log(f"streams: {args.streams} builds x {args.line_bytes}-byte appends for {args.stream_seconds:g} s")
    streams = measure_streams(server, database_url, args.streams, args.line_bytes, args.stream_seconds)
    server.stop()
    results.update({
        "ingest_mib": ingest["mib"], "ingest_api_mb_per_s": ingest["api_mb_per_s"],
        "ingest_raw_insert_mb_per_s": ingest["raw_mb_per_s"],
        "ingest_ratio": round(ingest["api_mb_per_s"] / ingest["raw_mb_per_s"], 3),
        "streams": streams,
        "targets": {"nudged_p50_s": "< 1", "ingest_api_mb_per_s": ">= 50"},
    })
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
