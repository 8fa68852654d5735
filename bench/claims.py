"""Claim throughput: the real `POST /api/v1/builds/request` endpoint vs a raw psycopg SKIP LOCKED loop.

5,000 pending builds; 100 concurrent claimers (one drone each) claim until
the queue is empty, first over HTTP against uvicorn, then — after every build
is put back to pending — as 100 threads running the bare
`SELECT … FOR UPDATE SKIP LOCKED` + `UPDATE` on the same database. Prints
claims/s of both, their ratio, latency percentiles and the number of builds
handed out twice (must be 0), as JSON on the last line.

    .venv/bin/python bench/claims.py [--builds 5000] [--claimers 100] [--workers 2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))
from cpu import postgres_seconds, tree_seconds  # noqa: E402
from harness import Server, available_connections, log, percentile, prepare_environment  # noqa: E402

RAW_CLAIM = """
WITH candidate AS (
    SELECT id FROM builds_build
    WHERE state = 'pending' AND required_labels <@ %(labels)s::varchar[]
    ORDER BY queue_priority DESC, id
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
UPDATE builds_build AS build SET state = 'assigned', drone_id = %(drone)s, assigned_at = now()
FROM candidate WHERE build.id = candidate.id
RETURNING build.id
"""


def seed(builds: int, claimers: int) -> list[tuple[int, str]]:
    """Pending builds and drones (with tokens); returns (drone id, token) pairs."""
    from django.utils import timezone

    from builds.models import Build
    from builds.services import job_create, queues_ensure_defaults
    from drones.services import drone_register, join_token_issue

    queues_ensure_defaults()
    job = job_create(name="bench", scm_url="https://git.example.com/bench.git", build_config={"steps": ["true"]})
    now = timezone.now()
    Build.objects.bulk_create([
        Build(job=job, number=n, trigger="api", queue=job.queue, queue_priority=job.queue.priority,
              required_labels=[], timeout_seconds=600, created_at=now, queued_at=now, branch="main")
        for n in range(1, builds + 1)
    ], batch_size=1000)
    job.next_build_number = builds + 1
    job.save(update_fields=["next_build_number"])
    _, join = join_token_issue(name="bench")
    drones = []
    for index in range(claimers):
        registration = drone_register(join_token=join, name=f"bench-{index}", capacity=builds, labels=["linux"])
        drones.append((registration.drone.pk, registration.token))
    return drones


def reset_to_pending() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM builds_buildevent")
        cursor.execute("DELETE FROM builds_buildattempt")
        cursor.execute("UPDATE builds_build SET state = 'pending', drone_id = NULL, attempt_count = 0, "
                       "assigned_at = NULL, ack_deadline = NULL, lease_expires_at = NULL")
    vacuum()


def vacuum() -> None:
    """Both phases start from a freshly vacuumed queue (no dead rows left by seeding or the other phase)."""
    import psycopg
    from django.db import connection

    with psycopg.connect(**{**connection.get_connection_params(), "autocommit": True}) as raw:
        for table in ("builds_build", "builds_buildattempt", "builds_buildevent"):
            raw.execute(f"VACUUM ANALYZE {table}")


async def endpoint_phase(url: str, drones: list[tuple[int, str]]) -> dict:
    """Each drone on its own keep-alive connection claims until it is answered 204 (the queue is empty)."""
    from urllib.parse import urlsplit

    import loadgen

    parts = urlsplit(url)
    latencies: list[float] = []
    claimed: list[int] = []
    errors = Counter()

    async def claimer(token: str) -> None:
        request = loadgen.render("POST", "/api/v1/builds/request", {"free_slots": 1, "labels": ["linux"]},
                                 {"Authorization": f"Bearer {token}"})
        connection = await loadgen.Connection.open(parts.hostname, parts.port)
        try:
            while True:
                started = time.perf_counter()
                response = await connection.request(request)
                latencies.append(time.perf_counter() - started)
                if response.status == 204:
                    return
                if response.status != 201:
                    errors[response.status] += 1
                    continue
                claimed.append(json.loads(response.body)["id"])
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(claimer(token) for _, token in drones))
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "claimed": claimed, "latencies": latencies, "errors": dict(errors)}


def cpu_sample(server_pid: int | None = None) -> dict[str, float]:
    """CPU seconds so far of this process, the server's process tree, and PostgreSQL (all its processes)."""
    result = {"client": tree_seconds(os.getpid(), children=False), "database": postgres_seconds()}
    if server_pid:
        result["server"] = tree_seconds(server_pid)
    return result


def cpu_ms_per_claim(before: dict, after: dict, claims: int) -> dict:
    return {f"{name}_cpu_ms_per_claim": round((after[name] - before[name]) * 1000 / max(claims, 1), 3)
            for name in after if name in before}


def raw_phase(database_url: str, drones: list[tuple[int, str]], connections: int) -> dict:
    """The raw loop; connections stay open until the CPU is sampled, so their backends' CPU is counted."""
    import psycopg

    latencies: list[float] = []
    claimed: list[int] = []
    lock = threading.Lock()
    ready = threading.Barrier(connections + 1, timeout=60)
    finished = threading.Barrier(connections + 1, timeout=300)
    release = threading.Event()

    def claimer(drone_id: int) -> None:
        mine, times = [], []
        with psycopg.connect(database_url, autocommit=True) as connection:
            ready.wait()
            while True:
                started = time.perf_counter()
                row = connection.execute(RAW_CLAIM, {"labels": ["linux"], "drone": drone_id}).fetchone()
                times.append(time.perf_counter() - started)
                if row is None:
                    break
                mine.append(row[0])
            with lock:
                claimed.extend(mine)
                latencies.extend(times)
            finished.wait()
            release.wait(300)

    threads = [threading.Thread(target=claimer, args=(drone_id,)) for drone_id, _ in drones[:connections]]
    for thread in threads:
        thread.start()
    ready.wait()
    cpu_before = cpu_sample()
    started = time.perf_counter()
    finished.wait()
    elapsed = time.perf_counter() - started
    cpu = cpu_ms_per_claim(cpu_before, cpu_sample(), len(claimed))
    release.set()
    for thread in threads:
        thread.join()
    return {"elapsed": elapsed, "claimed": claimed, "latencies": latencies, "cpu": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=5000)
    parser.add_argument("--claimers", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--pool-size", type=int, default=16, help="database connections per server process")
    args = parser.parse_args()
    database_url = prepare_environment("claims")
    log(f"seeding {args.builds} builds and {args.claimers} drones")
    drones = seed(args.builds, args.claimers)
    vacuum()
    from django.db import connection

    connection.close()
    server = Server(workers=args.workers, env={"SWARM_DB_POOL": "1", "SWARM_DB_POOL_MAX": str(args.pool_size),
                                               "SWARM_LOG_LEVEL": "WARNING"})
    log(f"endpoint phase: {args.claimers} claimers against {server.url}")
    import loadgen

    cpu_before = cpu_sample(server.process.pid)
    endpoint = loadgen.run(endpoint_phase(server.url, drones))
    endpoint_cpu = cpu_ms_per_claim(cpu_before, cpu_sample(server.process.pid), len(endpoint["claimed"]))
    server.stop()
    from builds.models import Build, BuildAttempt

    attempts_per_build = Counter(BuildAttempt.objects.values_list("build_id", flat=True))
    endpoint_doubles = sum(1 for n in attempts_per_build.values() if n > 1) + \
        sum(1 for n in Counter(endpoint["claimed"]).values() if n > 1)
    endpoint_left = Build.objects.filter(state="pending").count()
    reset_to_pending()
    connection.close()
    raw_connections = available_connections(database_url, args.claimers)
    log(f"raw phase: {raw_connections} psycopg threads, one connection each")
    raw = raw_phase(database_url, drones, raw_connections)
    raw_doubles = sum(1 for n in Counter(raw["claimed"]).values() if n > 1)
    endpoint_rate = len(endpoint["claimed"]) / endpoint["elapsed"]
    raw_rate = len(raw["claimed"]) / raw["elapsed"]
    result = {
        "benchmark": "claims",
        "builds": args.builds,
        "claimers": args.claimers,
        "uvicorn_workers": args.workers,
        "server_pool_size": args.pool_size,
        "endpoint_claims": len(endpoint["claimed"]),
        "endpoint_claims_per_s": round(endpoint_rate, 1),
        "endpoint_p50_ms": round(percentile(endpoint["latencies"], 0.50) * 1000, 2),
        "endpoint_p99_ms": round(percentile(endpoint["latencies"], 0.99) * 1000, 2),
        "endpoint_errors": endpoint["errors"],
        "endpoint_left_pending": endpoint_left,
        "endpoint_cpu": endpoint_cpu,
        "raw_connections": raw_connections,
        "raw_claims": len(raw["claimed"]),
        "raw_claims_per_s": round(raw_rate, 1),
        "raw_p99_ms": round(percentile(raw["latencies"], 0.99) * 1000, 2),
        "raw_cpu": raw["cpu"],
        "ratio": round(endpoint_rate / raw_rate, 3) if raw_rate else None,
        "double_assignments": endpoint_doubles + raw_doubles,
        "target_ratio": 0.5,
    }
    print(json.dumps(result))
    return 0 if result["double_assignments"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
