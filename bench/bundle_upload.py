"""Benchmark: bundle upload through the API vs. straight to S3 (issue 2).

Run on a fresh machine as `.venv/bin/python bench/bundle_upload.py`. It starts
everything on 127.0.0.1: PostgreSQL and Redis (embedded, unless DATABASE_URL /
REDIS_URL are set: then a throwaway database `swarm_bench_<random>` is created
and dropped at the end), SeaweedFS (S3), migrations, and one uvicorn process
serving the real ASGI app with blobs on that S3.

For each size (100 MiB and 1 GiB by default) it writes random-content
`.tar.gz` bundles to temp files (gzip level 0 over random bytes: nothing to
shrink) and uploads:

* `direct_s3`: the file to the same bucket with boto3's multipart upload
  (16 MiB parts, `--s3-concurrency` threads: the baseline);
* `api_post`: `POST /api/v1/bundles` (multipart form, streamed from the file,
  declared sha256);
* `api_put`: `PUT /api/v1/bundles/<sha256>` (raw body, what swarmctl uses).

Each API upload is a fresh file (otherwise the second would be deduplicated
and never reach S3). Every size runs `--rounds` times (default 2) with direct
and API uploads interleaved; throughput is the median of the rounds, ratios
are medians over medians. A thread samples the server process's RSS every
~20 ms; "RSS growth" is the peak during an upload minus the RSS just before
it, worst round reported.
The last line printed is the JSON summary.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "agent"))

import boto3  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402

from swarm.embedded import free_port, start_postgres, start_redis, start_seaweedfs, wait_for_port  # noqa: E402
from swarm_agent.bundle_upload import BundlePush, push_bundle  # noqa: E402

MIB = 1024 * 1024
CHUNK = 4 * MIB
S3_PART_SIZE = 16 * MIB
TARGET_RATIO = 0.7
TARGET_RSS_GROWTH_MIB = 64


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class _RandomReader:
    """A file-like source of `size` random bytes (for tarfile.addfile)."""

    def __init__(self, size: int):
        self.remaining = size

    def read(self, size: int = -1) -> bytes:
        wanted = self.remaining if size < 0 else min(size, self.remaining)
        self.remaining -= wanted
        return os.urandom(wanted)


def write_random_bundle(path: Path, size: int) -> tuple[str, int]:
    """A valid `.tar.gz` of about `size` bytes of random content, written in a stream; returns (sha256, size)."""
    payload = size - 4096  # tar header, padding, end blocks and gzip framing
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=0) as compressed:
            with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
                info = tarfile.TarInfo(f"payload-{secrets.token_hex(4)}.bin")
                info.size = payload
                info.mode = 0o644
                archive.addfile(info, _RandomReader(payload))
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest(), path.stat().st_size


class RssSampler:
    """Samples a process's RSS every `interval` seconds on a thread; reports the peak of a window."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        return self.process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                current = self.rss()
            except psutil.Error:
                return
            with self._lock:
                self.peak = max(self.peak, current)
            time.sleep(self.interval)

    def start_window(self) -> int:
        """Begin a measurement window; returns the RSS right now (the baseline)."""
        baseline = self.rss()
        with self._lock:
            self.peak = baseline
        return baseline

    def window_peak(self) -> int:
        with self._lock:
            return self.peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def create_database(admin_url: str) -> tuple[str, str]:
    """Create `swarm_bench_<random>` on the configured server; returns (its URL, its name)."""
    import psycopg

    name = f"swarm_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.partition("?")
    prefix = base.rsplit("/", 1)[0]
    query = admin_url[len(base):]
    return f"{prefix}/{name}{query}", name


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Server:
    """One uvicorn process serving swarm.asgi:application on 127.0.0.1."""

    def __init__(self, env: dict, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "swarm.asgi:application", "--host", "127.0.0.1", "--port",
             str(self.port), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=dict(env, SWARM_PUBLIC_URL=self.url), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, timeout=60, process=self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="100,1024", help="Comma-separated bundle sizes in MiB.")
    parser.add_argument("--s3-concurrency", type=int, default=4, help="boto3 threads for the direct upload.")
    parser.add_argument("--rounds", type=int, default=2,
                        help="Repetitions per size (median throughput, worst RSS growth are reported).")
    parser.add_argument("--keep", action="store_true", help="Keep the temp directory (logs) afterwards.")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes_mib.split(",")]
    started = time.monotonic()

    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="swarm-bench-upload-"))
        if not options.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        # The server's own settings (e.g. SWARM_S3_PART_SIZE, SWARM_S3_UPLOAD_THREADS) pass through;
        # what this script sets below (database, S3, secrets) wins.
        env = dict(os.environ)

        admin_database_url = os.environ.get("DATABASE_URL")
        if admin_database_url:
            database_url, database_name = create_database(admin_database_url)
            stack.callback(drop_database, admin_database_url, database_name)
            log(f"using the configured PostgreSQL, throwaway database {database_name}")
        else:
            postgres = stack.enter_context(start_postgres(workdir / "postgres", database="swarm_bench"))
            database_url = postgres.url
            log(f"embedded PostgreSQL at {database_url}")
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis_url = stack.enter_context(start_redis(workdir / "redis")).url
            log(f"embedded Redis at {redis_url}")
        bucket = "swarm-bench"
        s3 = stack.enter_context(start_seaweedfs(workdir / "s3" / "data", workdir / "s3" / "logs", bucket=bucket))
        log(f"SeaweedFS S3 at {s3.endpoint_url}")

        env.update({
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "swarm.settings",
            "SWARM_SECRET_KEY": secrets.token_hex(32), "SWARM_VAR_DIR": str(workdir / "var"),
            "SWARM_S3_BUCKET": bucket, "SWARM_S3_ENDPOINT_URL": s3.endpoint_url,
            "SWARM_S3_ACCESS_KEY": s3.access_key, "SWARM_S3_SECRET_KEY": s3.secret_key,
            "SWARM_S3_REGION": s3.region, "SWARM_UPLOAD_TEMP_DIR": str(workdir / "spool"),
            "SWARM_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        })
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
        token = subprocess.run([*manage, "issue_token", "--scope", "engine", "--name", "bench"], cwd=ROOT, env=env,
                               check=True, capture_output=True, text=True).stdout.strip()
        server = Server(env, workdir / "uvicorn.log")
        stack.callback(server.stop)
        sampler = RssSampler(server.process.pid)
        stack.callback(sampler.stop)
        log(f"server pid {server.process.pid} at {server.url} (setup {time.monotonic() - started:.1f}s)")

        s3_client = boto3.client(
            "s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key, region_name=s3.region,
        )
        transfer = TransferConfig(multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE,
                                  max_concurrency=options.s3_concurrency)
        client = stack.enter_context(httpx.Client(
            base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(600.0, connect=30.0),
        ))

        def api_upload(path: Path, digest: str, size: int, *, raw: bool, label: str) -> dict:
            push = BundlePush(path=path, sha256=digest, size=size, tenant="bench", workflow=label, version="1.0.0",
                              create_tenant=True)
            sent = {"bytes": 0, "at": None}
            began = time.perf_counter()

            def on_progress(count: int) -> None:
                sent["bytes"] += count
                if sent["bytes"] >= size:
                    sent["at"] = time.perf_counter()

            baseline = sampler.start_window()
            status, _ = push_bundle(client, push, raw=raw, on_progress=on_progress)
            elapsed = time.perf_counter() - began
            assert status == 201, status
            growth = sampler.window_peak() - baseline
            # body_sent_seconds: until the last byte was handed to the socket; the rest is the server finishing.
            return {"seconds": round(elapsed, 3), "mib_per_s": round(size / MIB / elapsed, 1),
                    "body_sent_seconds": round((sent["at"] or began) - began, 3),
                    "rss_baseline_mib": round(baseline / MIB, 1), "rss_growth_mib": round(growth / MIB, 1)}

        # Warm-up: load every code path (boto3 client, tar inspector, ORM) before measuring memory.
        warm = workdir / "warm.tar.gz"
        warm_digest, warm_size = write_random_bundle(warm, 2 * MIB)
        api_upload(warm, warm_digest, warm_size, raw=True, label="warmup-put")
        warm_digest, warm_size = write_random_bundle(warm, 2 * MIB)
        api_upload(warm, warm_digest, warm_size, raw=False, label="warmup-post")

        results = {}
        for size_mib in sizes:
            rounds = {"direct_s3": [], "api_post": [], "api_put": []}
            size = 0
            # Rounds interleave direct and API uploads so that both see the same background load.
            for round_number in range(options.rounds):
                log(f"{size_mib} MiB round {round_number + 1}: writing bundles")
                files = {}
                for name in ("post", "put"):
                    path = workdir / f"{name}-{size_mib}-{round_number}.tar.gz"
                    files[name] = (path, *write_random_bundle(path, size_mib * MIB))
                direct_path, direct_digest, size = files["post"]
                direct_seconds = timed(lambda: s3_client.upload_file(
                    str(direct_path), bucket, f"bench-direct/{direct_digest}", Config=transfer))
                rounds["direct_s3"].append({"seconds": round(direct_seconds, 3),
                                            "mib_per_s": round(size / MIB / direct_seconds, 1)})
                rounds["api_post"].append(api_upload(*files["post"], raw=False, label=f"post-{size_mib}-{round_number}"))
                rounds["api_put"].append(api_upload(*files["put"], raw=True, label=f"put-{size_mib}-{round_number}"))
                for kind, measured in rounds.items():
                    log(f"{size_mib} MiB {kind}: {measured[-1]}")
                for path, *_ in files.values():
                    path.unlink()
            direct_rate = round(statistics.median(entry["mib_per_s"] for entry in rounds["direct_s3"]), 1)
            entry = {"bytes": size, "rounds": options.rounds,
                     "direct_s3": {"mib_per_s": direct_rate, "runs": rounds["direct_s3"]}}
            for kind in ("api_post", "api_put"):
                rate = round(statistics.median(run["mib_per_s"] for run in rounds[kind]), 1)
                entry[kind] = {
                    "mib_per_s": rate,
                    "ratio_vs_s3": round(rate / direct_rate, 3),
                    "rss_growth_mib": max(run["rss_growth_mib"] for run in rounds[kind]),
                    "runs": rounds[kind],
                }
            results[f"{size_mib}MiB"] = entry

    largest = results[f"{max(sizes)}MiB"]
    best_ratio = max(largest["api_post"]["ratio_vs_s3"], largest["api_put"]["ratio_vs_s3"])
    peak_growth = max(entry[kind]["rss_growth_mib"] for entry in results.values() for kind in ("api_post", "api_put"))
    summary = {
        "benchmark": "bundle_upload",
        "cpus": os.cpu_count(),
        "s3_concurrency": options.s3_concurrency,
        "server_s3_part_size_mib": int(os.environ.get("SWARM_S3_PART_SIZE", 5 * MIB)) // MIB,
        "server_s3_upload_threads": int(os.environ.get("SWARM_S3_UPLOAD_THREADS", 4)),
        "results": results,
        "targets": {
            "ratio_at_largest": TARGET_RATIO, "rss_growth_mib_max": TARGET_RSS_GROWTH_MIB,
            "ratio_met": best_ratio >= TARGET_RATIO,
            "post_ratio_met": largest["api_post"]["ratio_vs_s3"] >= TARGET_RATIO,
            "put_ratio_met": largest["api_put"]["ratio_vs_s3"] >= TARGET_RATIO,
            "rss_met": peak_growth < TARGET_RSS_GROWTH_MIB,
        },
        "load_average_1min": round(os.getloadavg()[0], 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
