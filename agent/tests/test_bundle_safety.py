"""The bundle inspector: same verdicts as tarfile's view of an archive, linear time, bombs refused early."""
from __future__ import annotations

import gzip
import io
import tarfile
import time
import zlib

import pytest

from swarm_agent.bundle_safety import (
    BundleInspector,
    BundleLimits,
    BundleRejected,
    InflatingReader,
    check_tar_stream,
)

MiB = 1024 * 1024
NO_RATIO = BundleLimits(max_ratio=10**12, max_members=10**7, max_unpacked_bytes=2**62)


def tar_gz(members, *, fmt=tarfile.PAX_FORMAT) -> bytes:
    """A .tar.gz of `(TarInfo, data)` pairs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=fmt) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def info(name, *, kind=tarfile.REGTYPE, size=0, mode=0o644, linkname=""):
    member = tarfile.TarInfo(name)
    member.type, member.size, member.mode, member.linkname = kind, size, mode, linkname
    return member


def zeros_bundle(unpacked_bytes: int, *, name="zeros.bin") -> bytes:
    """One member of zeros, compressed in one gzip stream without holding it in memory."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(info(name, size=unpacked_bytes).tobuf())]
    block = bytes(MiB)
    remaining = unpacked_bytes
    while remaining:
        step = min(remaining, MiB)
        parts.append(compressor.compress(block[:step]))
        remaining -= step
    parts.append(compressor.compress(bytes(-unpacked_bytes % 512 + 1024)))
    parts.append(compressor.flush())
    return b"".join(parts)


def empty_members_bundle(count: int) -> bytes:
    return tar_gz([(info(f"f{i}"), b"") for i in range(count)], fmt=tarfile.USTAR_FORMAT)


def inspect(data: bytes, limits=BundleLimits(), chunk=MiB):
    """The inspector's verdict: the summary, or the refusal code."""
    try:
        return check_tar_stream(io.BytesIO(data), limits, chunk_size=chunk)
    except BundleRejected as rejected:
        return rejected.code


def tarfile_view(data: bytes):
    """What tarfile itself lists: (member count, bytes of regular files)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = archive.getmembers()
    return len(members), sum(m.size for m in members if m.isfile())


LONG = "deep/" * 40 + "file.txt"  # 208 characters: a GNU long name or a pax path
ARCHIVES = {
    "ustar": ([(info("a.txt", size=3), b"abc"), (info("dir", kind=tarfile.DIRTYPE), None),
               (info("link", kind=tarfile.SYMTYPE, linkname="a.txt"), None)], tarfile.USTAR_FORMAT),
    "ustar_prefix": ([(info("p" * 90 + "/" + "n" * 90, size=5), b"hello")], tarfile.USTAR_FORMAT),
    "gnu_long_name": ([(info(LONG, size=2), b"hi"), (info("l", kind=tarfile.SYMTYPE, linkname=LONG), None)],
                      tarfile.GNU_FORMAT),
    "pax_long_name": ([(info(LONG, size=2), b"hi"), (info("h", kind=tarfile.LNKTYPE, linkname=LONG), None)],
                      tarfile.PAX_FORMAT),
    "pax_unicode": ([(info("données/naïve.txt", size=1), b"x")], tarfile.PAX_FORMAT),
    "odd_sizes": ([(info(f"f{i}", size=i * 37), b"z" * (i * 37)) for i in range(40)], tarfile.PAX_FORMAT),
}


@pytest.mark.parametrize("case", sorted(ARCHIVES))
@pytest.mark.parametrize("chunk", [1, 7, 512, MiB])
def test_the_inspector_sees_what_tarfile_sees(case, chunk):
    members, fmt = ARCHIVES[case]
    data = tar_gz(members, fmt=fmt)
    summary = inspect(data, chunk=chunk)
    assert not isinstance(summary, str), summary
    assert (summary.member_count, summary.unpacked_size) == tarfile_view(data)


RULES = {
    "absolute_path": [(info("/etc/passwd", size=1), b"x")],
    "path_traversal": [(info("a/../../escape", size=1), b"x")],
    "link_escapes_root": [(info("l", kind=tarfile.SYMTYPE, linkname="../../etc"), None)],
    "device_file": [(info("dev", kind=tarfile.CHRTYPE), None)],
    "fifo": [(info("pipe", kind=tarfile.FIFOTYPE), None)],
    "setuid_bit": [(info("tool", size=1, mode=0o4755), b"x")],
}


@pytest.mark.parametrize("code", sorted(RULES))
def test_each_rule_is_refused_by_its_code(code):
    assert inspect(tar_gz(RULES[code])) == code


def test_a_traversal_hidden_in_a_pax_path_is_refused():
    # The ustar name field is harmless; only the pax header (which tarfile obeys) says "../".
    member = info("innocent.txt", size=1)
    member.pax_headers = {"path": "../../etc/cron.d/evil"}
    assert inspect(tar_gz([(member, b"x")])) == "path_traversal"


def test_a_traversal_hidden_in_a_gnu_long_name_is_refused():
    assert inspect(tar_gz([(info("../" * 40 + "evil", size=1), b"x")], fmt=tarfile.GNU_FORMAT)) == "path_traversal"


@pytest.mark.parametrize("data, code", [
    (b"", "not_a_tar_gz"),
    (b"not gzip at all", "not_a_tar_gz"),
    (gzip.compress(b"just gzip, no tar inside" * 100), "not_a_tar_gz"),
    (tar_gz([(info("a.txt", size=3000), b"a" * 3000)])[:-30], "not_a_tar_gz"),
    (gzip.compress(info("a.txt", size=3000).tobuf() + b"a" * 100), "not_a_tar_gz"),  # ends inside a member
    (tar_gz([]), "empty_bundle"),
])
def test_broken_archives_are_refused(data, code):
    assert inspect(data) == code


def test_concatenated_gzip_members_and_trailing_bytes_are_read_like_gzip_does():
    whole = tar_gz([(info("a.txt", size=3), b"abc")])
    raw = gzip.decompress(whole)
    split = gzip.compress(raw[:700]) + gzip.compress(raw[700:])
    assert inspect(split).member_count == 1
    assert inspect(whole + b"\0" * 100).member_count == 1


def test_too_many_members_is_refused_as_soon_as_the_count_passes_the_limit():
    data = empty_members_bundle(25_000)
    started = time.perf_counter()
    assert inspect(data) == "too_many_members"
    assert time.perf_counter() - started < 2


def test_a_200k_member_bundle_is_refused_fast_and_checked_fast_when_allowed():
    data = empty_members_bundle(200_000)
    started = time.perf_counter()
    assert inspect(data) == "too_many_members"
    refused_in = time.perf_counter() - started
    started = time.perf_counter()
    assert inspect(data, NO_RATIO).member_count == 200_000
    checked_in = time.perf_counter() - started
    # The figures: 11.3 s to refuse 25,000 members, ~15 minutes for 200,000.
    assert refused_in < 2 and checked_in < 6, (refused_in, checked_in)


def _seconds_per_mib(data: bytes, unpacked_mib: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        summary = inspect(data, NO_RATIO)
        best = min(best, time.perf_counter() - started)
        assert summary.unpacked_size == unpacked_mib * MiB
    return best / unpacked_mib


def test_inspection_time_grows_linearly_with_unpacked_size():
    small = _seconds_per_mib(zeros_bundle(64 * MiB), 64, runs=3)
    large = _seconds_per_mib(zeros_bundle(512 * MiB), 512, runs=2)
    # Quadratic inspection (as before) made this ratio about 8.
    assert large < 2 * small, (small, large)


def test_a_zeros_bomb_is_refused_by_ratio_before_it_is_unpacked():
    # 2 GiB of zeros compresses to about 2 MB: under the 8 GiB absolute limit, far over 200:1.
    bomb = zeros_bundle(2 * 1024 * MiB)
    assert len(bomb) < 10 * MiB
    started = time.perf_counter()
    with pytest.raises(BundleRejected) as refused:
        check_tar_stream(io.BytesIO(bomb), BundleLimits())
    assert time.perf_counter() - started < 1
    assert refused.value.code == "decompression_bomb"
    assert "200:1" in refused.value.detail and "SWARM_BUNDLE_MAX_RATIO" in refused.value.detail


def test_small_compressible_bundles_are_under_the_ratio_floor():
    assert inspect(zeros_bundle(32 * MiB)).unpacked_size == 32 * MiB
    assert inspect(zeros_bundle(32 * MiB), BundleLimits(ratio_floor_bytes=16 * MiB)) == "decompression_bomb"


def test_a_declared_size_over_the_absolute_limit_is_refused_at_its_header():
    header_only = gzip.compress(info("huge.bin", size=9 * 1024**3).tobuf())
    inspector = BundleInspector(BundleLimits())
    with pytest.raises(BundleRejected) as refused:
        inspector.feed(header_only)
    assert refused.value.code == "too_large_unpacked"
    with pytest.raises(BundleRejected):  # and it stays refused
        inspector.feed(b"more")


def test_the_inflating_reader_gives_tarfile_a_bounded_ratio_checked_stream():
    with pytest.raises(BundleRejected) as refused:
        with tarfile.open(fileobj=InflatingReader(io.BytesIO(zeros_bundle(512 * MiB)), BundleLimits()),
                          mode="r|") as archive:
            for _ in archive:
                pass
    assert refused.value.code == "decompression_bomb"
    data = tar_gz(ARCHIVES["gnu_long_name"][0], fmt=tarfile.GNU_FORMAT)
    with tarfile.open(fileobj=InflatingReader(io.BytesIO(data), BundleLimits()), mode="r|") as archive:
        assert [m.name for m in archive] == [LONG, "l"]
