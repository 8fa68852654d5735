"""Hostile uploads against the real server: bombs are refused fast without starving heartbeats,
a tenant over its inspection limit gets a 429, and a client that goes away mid-upload leaves nothing."""
from __future__ import annotations

import io
import os
import socket
import statistics
import tarfile
import threading
import time
import zlib
from urllib.parse import urlsplit

import httpx

from bundles.blobstore import BlobStore
from bundles.models import Bundle, PendingBlob
from bundles.services import bundle_sweep_orphans
from workflows.models import Workflow, WorkflowVersion

MiB = 1024 * 1024


def zeros_bomb(unpacked_bytes: int) -> bytes:
    """One member of zeros: 512 MiB compresses to about half a megabyte."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    member = tarfile.TarInfo("zeros.bin")
    member.size = unpacked_bytes
    parts = [compressor.compress(member.tobuf())]
    block = bytes(MiB)
    for _ in range(unpacked_bytes // MiB):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(1024)) + compressor.flush())
    return b"".join(parts)


def engine_token(tenant) -> str:
    from swarm.core.services import api_token_issue

    return api_token_issue(scope="engine", tenant=tenant, name=f"live-{tenant.slug}")[1]


def drone_token() -> str:
    from drones.services import drone_register, join_token_issue

    _, join = join_token_issue(name="join-bomb-watch")
    return drone_register(join_token=join, name="bomb-watch").token


def post_bundle(client: httpx.Client, data: bytes, *, tenant: str, version: str) -> httpx.Response:
    return client.post("/api/v1/bundles", data={"tenant": tenant, "workflow": "bomb", "version": version},
                       files={"bundle": ("bundle.tar.gz", data, "application/gzip")})


def test_bombs_are_refused_in_under_a_second_while_heartbeats_stay_fast(live_url, tenant, other_tenant):
    bomb = zeros_bomb(512 * MiB)
    heartbeat = httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {drone_token()}"}, timeout=10)
    latencies: list[float] = []
    stop = threading.Event()

    def beat():
        while not stop.is_set():
            started = time.perf_counter()
            answer = heartbeat.post("/api/v1/drones/heartbeat", json={"metrics": {"load": 1}})
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            time.sleep(0.005)

    refusals: list[tuple[int, str, float]] = []

    def upload_bombs(owner):
        client = httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {engine_token(owner)}"},
                              timeout=60)
        for attempt in range(4):
            started = time.perf_counter()
            answer = post_bundle(client, bomb, tenant=owner.slug, version=f"1.0.{attempt}")
            refusals.append((answer.status_code, answer.json().get("error"), time.perf_counter() - started))

    # One bomb first, alone and timed: the issue's 84 s became well under a second (the first request of
    # a server process also pays for its imports, the Redis connection and the pool, so it is not timed).
    warm = httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {engine_token(tenant)}"}, timeout=60)
    post_bundle(warm, b"warm-up", tenant=tenant.slug, version="0.0.1")
    started = time.perf_counter()
    alone = post_bundle(warm, bomb, tenant=tenant.slug, version="0.0.2")
    assert alone.status_code == 400 and alone.json()["error"] == "decompression_bomb", alone.text
    assert time.perf_counter() - started < 1

    watcher = threading.Thread(target=beat)
    watcher.start()
    time.sleep(1.5)  # heartbeats alone first: the same run's baseline (after warming the connection)
    baseline = list(latencies[len(latencies) // 4:])
    latencies.clear()
    uploaders = [threading.Thread(target=upload_bombs, args=(owner,)) for owner in (tenant, other_tenant)]
    for uploader in uploaders:
        uploader.start()
    for uploader in uploaders:
        uploader.join()
    stop.set()
    watcher.join()

    assert len(refusals) == 8
    assert all(status == 400 and code == "decompression_bomb" for status, code, _ in refusals), refusals
    # Two at once on a two-core machine: each still well under two seconds.
    assert max(seconds for _, _, seconds in refusals) < 2, refusals
    # Heartbeats stay under 50 ms p99 while bombs are checked; on a machine already loaded by other work
    # (where the heartbeats alone are slower) they stay within twice the same run's baseline instead. A
    # starved server (the issue's 1.5-12.7 s /readyz) fails either way.
    p99 = statistics.quantiles(latencies, n=100)[98]
    baseline_p99 = statistics.quantiles(baseline, n=100)[98]
    assert len(latencies) > 30 and len(baseline) > 30, (len(latencies), len(baseline))
    assert p99 < max(0.05, 2 * baseline_p99), (p99, baseline_p99, max(latencies))
    assert not WorkflowVersion.objects.exists() and not Bundle.objects.exists()


def test_a_tenant_over_its_inspection_limit_gets_a_429(live_url, tenant, settings):
    """Slots held by two slow uploads: a third from the same tenant is refused before its body is read."""
    token = engine_token(tenant)
    host, port = urlsplit(live_url).hostname, urlsplit(live_url).port
    slow = [_start_slow_upload(host, port, token, tenant.slug, total=8 * MiB) for _ in range(2)]
    try:
        time.sleep(0.5)
        client = httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        answer = post_bundle(client, zeros_bomb(MiB), tenant=tenant.slug, version="2.0.0")
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"] == "too_many_inspections"
        assert "SWARM_BUNDLE_INSPECTIONS_PER_TENANT" in answer.json()["detail"]
    finally:
        for sock in slow:
            sock.close()
    # The slots come back when the slow uploads end: the next upload is inspected (and refused as no tar).
    deadline = time.monotonic() + 10
    while True:
        answer = post_bundle(client, b"not a tarball", tenant=tenant.slug, version="2.0.1")
        if answer.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.status_code == 400 and answer.json()["error"] == "not_a_tar_gz", answer.text


def _start_slow_upload(host: str, port: int, token: str, tenant: str, *, total: int) -> socket.socket:
    """A multipart upload that announces `total` bytes and sends only its first megabyte of random data."""
    boundary = "swarmboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"tenant\"\r\n\r\n{tenant}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"workflow\"\r\n\r\nslow\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"b.tar.gz\"\r\n"
            f"Content-Type: application/gzip\r\n\r\n").encode()
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as archive:
        member = tarfile.TarInfo("noise.bin")
        noise = os.urandom(total)
        member.size = len(noise)
        archive.addfile(member, io.BytesIO(noise))
    body_start = head + payload.getvalue()[:MiB]
    sock = socket.create_connection((host, port))
    sock.sendall(
        (f"POST /api/v1/bundles HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
         f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
         f"Content-Length: {len(head) + total + 64 * 1024}\r\n\r\n").encode() + body_start)
    return sock


def test_a_client_that_disconnects_mid_upload_leaves_nothing_registered(live_url, tenant):
    before = {blob.key for blob in BlobStore().list_blobs("bundles/")}
    host, port = urlsplit(live_url).hostname, urlsplit(live_url).port
    sock = _start_slow_upload(host, port, engine_token(tenant), tenant.slug, total=16 * MiB)
    time.sleep(1)
    sock.close()  # gone mid-body
    time.sleep(1)
    assert not Workflow.objects.exists() and not WorkflowVersion.objects.exists()
    assert not Bundle.objects.exists() and not PendingBlob.objects.exists()
    bundle_sweep_orphans(grace_seconds=0)  # whatever the aborted upload left, the sweep finds
    assert {blob.key for blob in BlobStore().list_blobs("bundles/")} <= before
    # And the server is still answering.
    assert httpx.get(f"{live_url}/readyz", timeout=5).status_code == 200
