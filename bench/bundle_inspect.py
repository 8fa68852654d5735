"""Benchmark of bundle inspection (`swarm_agent.bundle_safety`, what every upload runs).

Builds bundles in memory and checks them the way an upload does (1 MiB
chunks into `BundleInspector`), against a baseline on the same bytes in the
same run: raw `zlib` inflation of the whole stream in the same fixed steps
(the floor: inspection cannot be faster than inflating), and `gzip -dc >
/dev/null` where `gzip` is installed.

(a) throughput at 64 MiB and 1 GiB unpacked (one member of pseudo-random
    text that compresses about 4:1, so the ratio limit does not apply);
    target ≥ 100 MB/s of unpacked bytes at 1 GiB, and time per MiB at the
    two sizes within 2× (linear);
(b) a bundle of 200,000 empty members: refused (`too_many_members`, default
    limit 20,000) and, with the limit raised, checked; target < 2 s;
(c) a 512 MiB-of-zeros bomb (~0.5 MB compressed): refused
    (`decompression_bomb`); target < 1 s.

Needs nothing running. Each figure is the best of a few runs. Prints JSON as the last line.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))

from swarm_agent.bundle_safety import (  # noqa: E402
    INFLATE_STEP_BYTES,
    BundleLimits,
    BundleRejected,
    check_tar_stream,
)

MiB = 1024 * 1024
RUNS = 3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def one_member_bundle(unpacked: int, block: bytes) -> bytes:
    """A single-member .tar.gz of `unpacked` bytes made by repeating `block` (1 MiB)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    member = tarfile.TarInfo("payload.bin")
    member.size = unpacked
    parts = [compressor.compress(member.tobuf())]
    for _ in range(unpacked // MiB):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(1024)) + compressor.flush())
    return b"".join(parts)


def text_block() -> bytes:
    """1 MiB of words from a small vocabulary, different in every block position (compresses ~4:1)."""
    rng = random.Random(10)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(4096)]
    out = bytearray()
    while len(out) < MiB:
        out += rng.choice(words) + b" "
    return bytes(out[:MiB])


def members_bundle(count: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.USTAR_FORMAT) as archive:
        for index in range(count):
            archive.addfile(tarfile.TarInfo(f"f{index}"), io.BytesIO(b""))
    return buffer.getvalue()


def best(function, runs: int = RUNS) -> tuple[float, object]:
    fastest, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest, result


def inspect(data: bytes, limits: BundleLimits):
    try:
        summary = check_tar_stream(io.BytesIO(data), limits)
        return {"accepted": True, "members": summary.member_count, "unpacked": summary.unpacked_size}
    except BundleRejected as rejected:
        return {"accepted": False, "code": rejected.code}


def zlib_floor(data: bytes) -> int:
    """Inflate the whole stream in the inspector's step size, touching nothing else."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    produced = 0
    view = memoryview(data)
    for start in range(0, len(data), MiB):
        pending = view[start:start + MiB]
        while pending:
            produced += len(inflate.decompress(pending, INFLATE_STEP_BYTES))
            pending = inflate.unconsumed_tail
    return produced


def gzip_floor(data: bytes) -> float | None:
    if not shutil.which("gzip"):
        return None
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bundle-inspect-{os.getpid()}.tar.gz"
    path.write_bytes(data)
    try:
        seconds, _ = best(lambda: subprocess.run(["gzip", "-dc", str(path)], stdout=subprocess.DEVNULL,
                                                 check=True), runs=2)
    finally:
        path.unlink()
    return seconds


def throughput(unpacked: int, block: bytes) -> dict:
    data = one_member_bundle(unpacked, block)
    no_ratio = BundleLimits(max_unpacked_bytes=2**62)
    seconds, verdict = best(lambda: inspect(data, no_ratio), runs=RUNS if unpacked <= 64 * MiB else 2)
    assert verdict.get("accepted"), verdict
    floor, produced = best(lambda: zlib_floor(data), runs=2)
    gzip_seconds = gzip_floor(data)
    figures = {
        "unpacked_mib": unpacked // MiB, "compressed_mib": round(len(data) / MiB, 2),
        "seconds": round(seconds, 3), "mb_per_s": round(produced / seconds / 1e6, 1),
        "seconds_per_mib": seconds / (unpacked / MiB),
        "zlib_floor_seconds": round(floor, 3), "zlib_floor_mb_per_s": round(produced / floor / 1e6, 1),
        "ratio_to_zlib_floor": round(floor / seconds, 2),
    }
    if gzip_seconds is not None:
        figures["gzip_dc_seconds"] = round(gzip_seconds, 3)
        figures["ratio_to_gzip_dc"] = round(gzip_seconds / seconds, 2)
    log(f"{unpacked // MiB} MiB: {figures}")
    return figures


def main() -> None:
    block = text_block()
    small = throughput(64 * MiB, block)
    large = throughput(1024 * MiB, block)

    many = members_bundle(200_000)
    refused_seconds, refused = best(lambda: inspect(many, BundleLimits()))
    checked_seconds, checked = best(lambda: inspect(many, BundleLimits(max_members=250_000)), runs=2)
    members = {"compressed_kb": len(many) // 1024, "refused_seconds": round(refused_seconds, 3),
               "refused_code": refused.get("code"), "checked_seconds": round(checked_seconds, 3),
               "checked_members": checked.get("members")}
    log(f"200k members: {members}")

    bomb = one_member_bundle(512 * MiB, bytes(MiB))
    bomb_seconds, bomb_verdict = best(lambda: inspect(bomb, BundleLimits()))
    bomb_figures = {"compressed_kb": len(bomb) // 1024, "refused_seconds": round(bomb_seconds, 3),
                    "code": bomb_verdict.get("code")}
    log(f"512 MiB zeros bomb: {bomb_figures}")

    scaling = large["seconds_per_mib"] / small["seconds_per_mib"]
    result = {
        "throughput_64mib": small, "throughput_1gib": large,
        "scaling_per_mib_1gib_over_64mib": round(scaling, 2),
        "members_200k": members, "bomb_512mib_zeros": bomb_figures,
        "targets": {
            "throughput_1gib_mb_per_s>=100": large["mb_per_s"] >= 100,
            "linear_within_2x": scaling < 2,
            "members_200k_under_2s": refused_seconds < 2 and checked_seconds < 2,
            "bomb_refused_under_1s": bomb_verdict.get("code") == "decompression_bomb" and bomb_seconds < 1,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
