"""Benchmark of `swarm-agent boot`: cold boot, warm boot and concurrent cold boots of a 100 MiB bundle.

Starts SeaweedFS (S3) on 127.0.0.1, stores a 100 MiB bundle (incompressible
payload + a main.py that prints one line), and runs the real boot script
(`python -m swarm_agent.boot`, BUNDLE_URL + BUNDLE_HASH mode) against the
object's presigned URL:

(a) cold boot (empty cache): time from spawn to the entrypoint's first
    output line, and the fetch throughput (from the boot's own
    `bundle_fetched` event) against two references on the same URL in the
    same run: the honest floor `curl -s URL | tee FILE | sha256sum` (fetch +
    hash + write, pipelined — what the boot must do), and plain `curl`
    (fetch + write only);
(b) warm boot (cache hit): time to first output against the floor
    `sha256sum <file>` + `tar -xzf <file>` of the same cached file;
(c) 8 concurrent cold boots of one hash through a byte-counting HTTP proxy in
    front of S3: the bytes fetched must equal one bundle.

Each measurement is the median of a few runs. Targets: fetch ≥ 0.9× the
curl | tee | sha256sum floor (and, earlier, ≥ 0.8× plain curl), warm ≤ 1.3×
floor, (c) exactly one download. Prints JSON as the last line.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))

from proxy import CountingProxy  # noqa: E402
from swarm.embedded import start_seaweedfs  # noqa: E402

BUNDLE_MIB = 100
RUNS = 5
CONCURRENT_BOOTS = 8
ENTRYPOINT = "print('first output', flush=True)\n"


def build_bundle(path: Path) -> str:
    """A ~100 MiB .tar.gz (random payload, so gzip cannot shrink it) and its sha256."""
    payload = os.urandom(BUNDLE_MIB * 1024 * 1024)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, data in (("main.py", ENTRYPOINT.encode()), ("payload.bin", payload)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256()
    with open(path, "rb") as bundle:
        while chunk := bundle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def boot(url: str, sha256: str, cache: Path, workdir: Path) -> dict:
    """Run one boot; returns time to first output and its events."""
    env = {"PATH": os.environ["PATH"], "BUNDLE_URL": url, "BUNDLE_HASH": sha256}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "swarm_agent.boot", "--cache-dir", str(cache), "--workdir", str(workdir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first_line = process.stdout.readline()
    first_output = time.perf_counter() - started
    stdout_rest, stderr = process.communicate(timeout=120)
    if process.returncode != 0 or first_line.strip() != "first output":
        raise RuntimeError(f"boot failed ({process.returncode}): {stderr[-2000:]}")
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return {"first_output_s": first_output, "events": events}


def timed(argv: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def curl_transfer_seconds(url: str, output: Path) -> float:
    """curl's own measure of the whole transfer (connect to last byte), without its process start."""
    result = subprocess.run(["curl", "-sf", "-o", str(output), "-w", "%{time_total}", url], check=True,
                            capture_output=True, text=True)
    return float(result.stdout.strip())


def floor_pipeline_seconds(url: str, output: Path) -> float:
    """Wall time of `curl -s URL | tee FILE | sha256sum`: fetch, hash and write, pipelined (the honest floor)."""
    started = time.perf_counter()
    subprocess.run(f"curl -sf '{url}' | tee '{output}' | sha256sum >/dev/null", shell=True, check=True,
                   executable="/bin/bash")
    return time.perf_counter() - started


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="swarm-bench-boot-"))
    s3 = start_seaweedfs(work / "s3", work / "s3-logs", bucket="bench-boot")
    try:
        import boto3

        bundle = work / "bundle.tar.gz"
        sha256 = build_bundle(bundle)
        size = bundle.stat().st_size
        client = boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                              aws_secret_access_key=s3.secret_key, region_name=s3.region)
        key = f"bundles/sha256/{sha256[:2]}/{sha256}.tar.gz"
        client.upload_file(str(bundle), s3.bucket, key)
        url = client.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=3600)

        # (a) cold boots vs curl on the same URL, interleaved so load drift hits both alike.
        # Both sides are transfer times: curl's own time_total, the boot's bundle_fetched ms.
        curl_seconds, floor_seconds, cold = [], [], []
        for run in range(RUNS):
            curl_seconds.append(curl_transfer_seconds(url, work / "curl.out"))
            floor_seconds.append(floor_pipeline_seconds(url, work / "floor.out"))
            shutil.rmtree(work / "cache", ignore_errors=True)
            cold.append(boot(url, sha256, work / "cache", work / f"cold{run}"))
        fetch_seconds = [next(e for e in r["events"] if e["type"] == "bundle_fetched")["data"]["ms"] / 1000
                         for r in cold]
        curl_mib_s = size / 1048576 / statistics.median(curl_seconds)
        floor_mib_s = size / 1048576 / statistics.median(floor_seconds)
        fetch_mib_s = size / 1048576 / statistics.median(fetch_seconds)

        # (b) warm boots vs sha256sum + tar -xzf of the cached file.
        cached = work / "cache" / "bundles" / f"{sha256}.tar.gz"
        warm = [boot(url, sha256, work / "cache", work / "warm")["first_output_s"] for _ in range(RUNS)]
        floors = []
        for _ in range(RUNS):
            target = work / "floor"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            floors.append(timed(["sha256sum", str(cached)]) + timed(["tar", "-xzf", str(cached), "-C", str(target)]))
        warm_s, floor_s = statistics.median(warm), statistics.median(floors)

        # (c) concurrent cold boots through a counting proxy.
        proxy = CountingProxy(s3.endpoint_url)
        parsed = urllib.parse.urlsplit(url)
        proxied = f"{proxy.base}{parsed.path}?{parsed.query}"
        shutil.rmtree(work / "cache", ignore_errors=True)
        threads, results = [], []
        for index in range(CONCURRENT_BOOTS):
            thread = threading.Thread(target=lambda i=index: results.append(
                boot(proxied, sha256, work / "cache", work / f"concurrent{i}")))
            threads.append(thread)
            thread.start()
        for thread in threads:
            thread.join()
        proxy.stop()

        figures = {
            "bundle_bytes": size,
            "cold_time_to_first_output_s": round(statistics.median(r["first_output_s"] for r in cold), 3),
            "curl_mib_per_s": round(curl_mib_s, 1),
            "boot_fetch_mib_per_s": round(fetch_mib_s, 1),
            "fetch_ratio_vs_curl": round(fetch_mib_s / curl_mib_s, 2),
            "floor_curl_tee_sha256sum_mib_per_s": round(floor_mib_s, 1),
            "fetch_ratio_vs_floor": round(fetch_mib_s / floor_mib_s, 2),
            "warm_time_to_first_output_s": round(warm_s, 3),
            "warm_floor_sha256sum_plus_tar_s": round(floor_s, 3),
            "warm_ratio_vs_floor": round(warm_s / floor_s, 2),
            "concurrent_boots": CONCURRENT_BOOTS,
            "concurrent_boots_succeeded": len(results),
            "concurrent_bytes_fetched": proxy.bytes_sent,
            "concurrent_requests": proxy.requests,
            "concurrent_downloads": proxy.bytes_sent / size,
        }
        figures["targets_met"] = {
            "fetch_at_least_0.9x_floor": figures["fetch_ratio_vs_floor"] >= 0.9,
            "fetch_at_least_0.8x_curl": figures["fetch_ratio_vs_curl"] >= 0.8,
            "warm_at_most_1.3x_floor": figures["warm_ratio_vs_floor"] <= 1.3,
            "concurrent_exactly_one_download": proxy.bytes_sent == size and len(results) == CONCURRENT_BOOTS,
        }
        print(json.dumps(figures))
        return 0
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
