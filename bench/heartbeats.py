"""Heartbeat throughput and failure-detection latency of one Swarm server on this machine.

    .venv/bin/python bench/heartbeats.py [--drones 15000] [--rate 500] [--duration 20]
                                         [--concurrency 64] [--workers 2]

What it does, all on 127.0.0.1:
1. Services: DATABASE_URL / REDIS_URL when set (a fresh throw-away database is
   created on that server), else embedded PostgreSQL and Redis (swarm.embedded).
2. One uvicorn server (`--workers` processes) with the real ASGI app.
3. `--drones` drones with real drone tokens, each heartbeating once first (the
   fleet is up; a first heartbeat also records provisioning). Paced run: heartbeats from those
   drones at `--rate` per second (15,000 drones every 30 s = 500/s) for
   `--duration` seconds, each a real `POST /api/v1/drones/heartbeat` with
   metrics → achieved heartbeats/s, p50/p99 latency, errors.
4. Capacity run: `--concurrency` async clients heartbeating as fast as they
   can, then the same clients against the trivial JSON `GET /healthz` of the
   same server (the baseline) → the ratio of the two throughputs.
5. Health sweep: the beat health check (`drones.ladder.fleet_evaluate`)
   over the whole fleet, live and with every ping due, at the default
   intervals; the baseline is the same check done drone by drone
   (`drone_evaluate` with its own ping, as the sweep used to), timed on
   `--sweep-sample` drones and projected onto the fleet.
6. Detection: a real `swarm-agent run` plus a real Celery worker and beat
   (health check every second, heartbeat interval 1 s); the agent is killed
   with SIGKILL and the time until its L1 EscalationEvent is measured.

The last line of output is the JSON result.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

sys.path.insert(0, str(BASE_DIR / "bench" / "_support"))

import loadgen  # noqa: E402
from cpu import tree_seconds  # noqa: E402
from harness import reap_abandoned_databases, throwaway_database_name  # noqa: E402
from swarm.embedded import free_port, start_postgres, start_redis, wait_for_port  # noqa: E402

PYTHON = sys.executable


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- services -------------------------------------------------------------------


class Services:
    """Database and Redis for the run; everything it started or created is undone in close()."""

    def __init__(self, workdir: Path):
        self.started = []
        self.dropped_database = None
        self.postgres_pid = None  # CPU of a shared database server cannot be attributed to this run
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            import psycopg

            for abandoned in reap_abandoned_databases(database_url):
                say(f"dropped {abandoned}, left by a bench that was killed")
            name = throwaway_database_name("heartbeats")
            parts = urlsplit(database_url)
            with psycopg.connect(database_url, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{name}"')
            self.admin_url = database_url
            self.dropped_database = name
            self.database_url = urlunsplit(parts._replace(path=f"/{name}"))
        else:
            say("DATABASE_URL not set: starting embedded PostgreSQL")
            postgres = start_postgres(workdir / "postgres", database="swarm_bench")
            self.started.append(postgres)
            self.database_url = postgres.url
            self.postgres_pid = postgres.pid
        self.redis_url = os.environ.get("REDIS_URL")
        if not self.redis_url:
            say("REDIS_URL not set: starting embedded Redis")
            redis_server = start_redis(workdir / "redis")
            self.started.append(redis_server)
            self.redis_url = redis_server.url

    def close(self) -> None:
        if self.dropped_database:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{self.dropped_database}" WITH (FORCE)')
        for service in reversed(self.started):
            service.stop()


def spawn(argv: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    return process


def stop(process: subprocess.Popen | None, timeout: float = 20) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- fleet ---------------------------------------------------------------------------


def create_fleet(count: int) -> list[str]:
    """`count` drones with drone tokens, created in bulk; returns the token plaintexts."""
    from drones.models import Drone
    from swarm.core.models import ApiToken
    from swarm.core.tokens import generate_token

    drones = Drone.objects.bulk_create([Drone(name=f"bench-{index:05d}", drone_type="lxc") for index in
                                        range(count)], batch_size=2000)
    tokens, plaintexts = [], []
    for drone in drones:
        generated = generate_token()
        plaintexts.append(generated.plaintext)
        tokens.append(ApiToken(name=f"drone:{drone.name}", scope="drone", prefix=generated.prefix,
                               digest=generated.digest, subject_type="drone", subject_id=str(drone.pk)))
    ApiToken.objects.bulk_create(tokens, batch_size=2000)
    return plaintexts


def delete_fleet() -> None:
    from drones.models import Drone
    from swarm.core.models import ApiToken

    ids = [str(pk) for pk in Drone.objects.filter(name__startswith="bench-").values_list("pk", flat=True)]
    ApiToken.objects.filter(subject_type="drone", subject_id__in=ids).delete()
    Drone.objects.filter(name__startswith="bench-").delete()


METRICS = {"cpu_percent": 12.5, "cpu_count": 2, "memory_total_bytes": 4_000_000_000,
           "memory_available_bytes": 2_500_000_000, "memory_percent": 37.5, "load_1": 0.3, "load_5": 0.2,
           "load_15": 0.1, "disk_total_bytes": 50_000_000_000, "disk_free_bytes": 20_000_000_000, "disk_percent": 60.0}


class CpuMeter:
    """CPU seconds used by process trees (server, database, this client) across one phase.

    On a shared, busy machine wall-clock throughput says more about the
    neighbours than about Swarm; CPU per request does not, and projects what
    the machine's cores would sustain if Swarm had them to itself.
    """

    def __init__(self, roots: dict[str, int | None]):
        self.roots = {name: pid for name, pid in roots.items() if pid}

    def sample(self) -> dict[str, float]:
        # This process's own children are the server and the agents, measured on their own.
        return {name: tree_seconds(pid, children=pid != os.getpid()) for name, pid in self.roots.items()}

    def measure(self, phase, requests_of=lambda result: result["requests"]) -> dict:
        before = self.sample()
        result = phase()
        after = self.sample()
        requests = max(1, requests_of(result))
        per_request = {f"{name}_cpu_ms_per_request": round((after[name] - before[name]) * 1000 / requests, 3)
                       for name in self.roots}
        total_ms = sum(per_request.values())
        result.update(per_request)
        if total_ms:
            result["projected_per_second_on_all_cores"] = round((os.cpu_count() or 1) * 1000 / total_ms, 1)
        return result


def heartbeat_requests(tokens: list[str]) -> list[bytes]:
    """One pre-rendered heartbeat request per drone (real token, real metrics body)."""
    return [loadgen.render("POST", "/api/v1/drones/heartbeat", {"metrics": METRICS},
                           {"Authorization": f"Bearer {token}"}) for token in tokens]


def heartbeat_answered(response: loadgen.Response) -> bool:
    """A heartbeat counts only when answered 200 with the `run` action."""
    return response.status == 200 and b'"action":"run"' in response.body.replace(b" ", b"")


# --- detection -----------------------------------------------------------------------


def measure_detection(url: str, env: dict, workdir: Path, timeout: float = 60.0) -> dict:
    """Kill a real agent and time how long the ladder (real Celery worker + beat) takes to act (L1)."""
    from django.db import connection

    from drones.models import Drone, EscalationEvent
    from drones.services import join_token_issue

    _, join = join_token_issue(name="bench-detection")
    worker = spawn([PYTHON, "-m", "celery", "-A", "swarm", "worker", "--pool", "threads", "--concurrency", "2",
                    "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                   env, workdir / "worker.log")
    beat = spawn([PYTHON, "-m", "celery", "-A", "swarm", "beat", "--loglevel", "WARNING", "--schedule",
                  str(workdir / "celerybeat-schedule")], env, workdir / "beat.log")
    agent = spawn([PYTHON, "-m", "swarm_agent.cli_agent", "run", "--server", url, "--join-token", join,
                   "--state-dir", str(workdir / "agent"), "--name", "bench-agent", "--drone-type", "lxc"],
                  env, workdir / "agent.log")
    try:
        deadline = time.monotonic() + timeout
        while not Drone.objects.filter(name="bench-agent", ws_connected=True, last_pong_at__isnull=False).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the agent never became healthy (see agent.log, worker.log)")
            time.sleep(0.1)
        time.sleep(2.0)  # a steady state: a few heartbeats and pings
        drone = Drone.objects.get(name="bench-agent")
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()
        killed = time.time()
        deadline = time.monotonic() + timeout
        while True:
            event = EscalationEvent.objects.filter(drone=drone, level=1).first()
            if event is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("no L1 event after killing the agent (see worker.log, beat.log)")
            time.sleep(0.05)
        connection.close()
        return {"kill_to_l1_seconds": round(event.at.timestamp() - killed, 2),
                "heartbeat_interval_s": float(env["SWARM_DRONE_HEARTBEAT_INTERVAL"]),
                "health_check_interval_s": float(env["SWARM_DRONE_HEALTH_CHECK_INTERVAL"]),
                "stale_after_missed": 2, "l1_detail": event.detail[:160]}
    finally:
        stop(agent)
        stop(beat)
        stop(worker)


# --- main -----------------------------------------------------------------------------


def measure_sweep(sample: int) -> dict:
    """The health check over the whole live fleet vs checking drones one by one (projected from `sample`)."""
    from datetime import timedelta

    from django.test import override_settings
    from django.utils import timezone

    from drones.ladder import drone_evaluate, fleet_evaluate
    from drones.models import Drone

    def live_fleet(**fields):
        now = timezone.now()
        Drone.objects.update(last_heartbeat_at=now, status="online", escalation_level=0, missed_pongs=0, **fields)
        return now

    # The default intervals: a sweep must finish well inside SWARM_DRONE_HEALTH_CHECK_INTERVAL (10 s).
    with override_settings(SWARM_DRONE_HEARTBEAT_INTERVAL=30, SWARM_DRONE_PING_INTERVAL=10):
        fleet = Drone.objects.count()
        live_fleet(healthy_since=None, last_ping_at=None, last_pong_at=None)
        started = time.perf_counter()
        first = fleet_evaluate()
        joined = time.perf_counter() - started
        now = live_fleet()
        Drone.objects.update(last_ping_at=now - timedelta(seconds=60), last_pong_at=now - timedelta(seconds=59))
        started = time.perf_counter()
        steady = fleet_evaluate()
        swept = time.perf_counter() - started
        pinged = Drone.objects.filter(last_ping_at__gte=now).count()
        drone_ids = list(Drone.objects.order_by("pk").values_list("pk", flat=True)[:sample])
        started = time.perf_counter()
        for drone_id in drone_ids:
            drone_evaluate(drone_id=drone_id, ping=True)
        per_drone = (time.perf_counter() - started) / max(len(drone_ids), 1)
    return {
        "drones": fleet,
        "first_sweep_seconds": round(joined, 3), "first_sweep_evaluated": len(first),
        "steady_sweep_seconds": round(swept, 3), "steady_sweep_evaluated": len(steady),
        "steady_sweep_pinged": pinged,
        "baseline_drone_by_drone_ms": round(per_drone * 1000, 3), "baseline_sample": len(drone_ids),
        "baseline_projected_sweep_seconds": round(per_drone * fleet, 1),
        "health_check_interval_seconds": 10,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drones", type=int, default=15_000)
    parser.add_argument("--rate", type=float, default=500.0, help="paced heartbeats per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measured run")
    parser.add_argument("--concurrency", type=int, default=64, help="clients in the capacity runs")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--sweep-sample", type=int, default=500, help="drones checked one by one (sweep baseline)")
    parser.add_argument("--skip-detection", action="store_true", help="only the throughput runs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server/worker/agent logs)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="swarm-bench-heartbeats-"))
    services = Services(workdir)
    server = None
    try:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": services.database_url, "REDIS_URL": services.redis_url,
            "SWARM_SECRET_KEY": env.get("SWARM_SECRET_KEY") or secrets.token_urlsafe(40),
            "SWARM_VAR_DIR": str(workdir / "var"), "DJANGO_SETTINGS_MODULE": "swarm.settings",
            "SWARM_CACHE_PREFIX": f"bench{os.getpid()}", "SWARM_CHANNELS_PREFIX": f"bench{os.getpid()}",
            "SWARM_DRONE_HEARTBEAT_INTERVAL": "1", "SWARM_DRONE_PING_INTERVAL": "1",
            "SWARM_DRONE_HEALTH_CHECK_INTERVAL": "1", "SWARM_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
            "SWARM_DB_POOL": "1",
        })
        os.environ.update(env)
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
        import django

        django.setup()
        say(f"creating {args.drones} drones with tokens")
        tokens = create_fleet(args.drones)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env["SWARM_PUBLIC_URL"] = url
        server = spawn([PYTHON, "-m", "uvicorn", "swarm.asgi:application", "--host", "127.0.0.1", "--port",
                        str(port), "--workers", str(args.workers), "--no-access-log", "--log-level", "warning"],
                       env, workdir / "uvicorn.log")
        wait_for_port("127.0.0.1", port, timeout=60)

        heartbeats = heartbeat_requests(tokens)
        healthz = [loadgen.render("GET", "/healthz")]

        def capacity_run(requests, check, duration):
            return loadgen.run(loadgen.closed_loop("127.0.0.1", port, requests, concurrency=args.concurrency,
                                                   duration=duration, check=check))

        say("steady state: every drone heartbeats once (the fleet is up before it is measured)")
        loadgen.run(loadgen.closed_loop("127.0.0.1", port, heartbeats, concurrency=args.concurrency,
                                        duration=240, check=heartbeat_answered, once=True))
        say("warming up")
        capacity_run(heartbeats, heartbeat_answered, 3)
        capacity_run(healthz, lambda response: response.status == 200, 2)
        meter = CpuMeter({"server": server.pid, "client": os.getpid(), "database": services.postgres_pid})
        say(f"paced: {args.rate:g} heartbeats/s from {args.drones} drones for {args.duration:g} s")
        paced = meter.measure(lambda: loadgen.run(loadgen.paced(
            "127.0.0.1", port, heartbeats, rate=args.rate, duration=args.duration, check=heartbeat_answered)))
        say(f"capacity: {args.concurrency} clients, heartbeat then /healthz, {args.duration:g} s each")
        capacity = meter.measure(lambda: capacity_run(heartbeats, heartbeat_answered, args.duration))
        baseline = meter.measure(lambda: capacity_run(healthz, lambda response: response.status == 200,
                                                      args.duration))

        say(f"health sweep over {args.drones} live drones, and {args.sweep_sample} checked one by one")
        sweep = measure_sweep(args.sweep_sample)

        delete_fleet()
        if args.skip_detection:
            detection = None
        else:
            say("detection: killing a real agent, waiting for L1 from the real worker + beat")
            detection = measure_detection(url, env, workdir)

        result = {
            "benchmark": "heartbeats",
            "drones": args.drones, "uvicorn_workers": args.workers, "cpu_count": os.cpu_count(),
            "paced": paced,
            "capacity_heartbeat": capacity,
            "health_sweep": sweep,
            "baseline_healthz": baseline,
            "heartbeats_per_second": paced["per_second"],
            "p50_ms": paced["p50_ms"], "p99_ms": paced["p99_ms"], "errors": paced["errors"] + capacity["errors"],
            "max_heartbeats_per_second": capacity["per_second"],
            "baseline_per_second": baseline["per_second"],
            "ratio_to_baseline": round(capacity["per_second"] / baseline["per_second"], 3)
            if baseline["per_second"] else None,
            "projected_heartbeats_per_second_on_all_cores": capacity.get("projected_per_second_on_all_cores"),
            "projected_baseline_per_second_on_all_cores": baseline.get("projected_per_second_on_all_cores"),
            "projected_ratio_to_baseline": round(capacity["projected_per_second_on_all_cores"]
                                                 / baseline["projected_per_second_on_all_cores"], 3)
            if capacity.get("projected_per_second_on_all_cores") and baseline.get(
                "projected_per_second_on_all_cores") else None,
            "load_average_at_end": os.getloadavg(),
            "target_met": bool(paced["per_second"] >= 0.98 * args.rate and (paced["p99_ms"] or 1e9) < 100
                               and paced["errors"] == 0 and baseline["per_second"]
                               and capacity["per_second"] / baseline["per_second"] >= 0.5),
            "detection": detection,
        }
    finally:
        from django.db import connections

        connections.close_all()
        stop(server)
        services.close()
        if args.keep:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
