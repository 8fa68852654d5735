"""Applying payloads on the drone (swarm_agent.payloads): real bytes over real HTTP into temp dirs, no Django."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.tests.test_boot import CountingServer, tarball
from swarm_agent.payloads.install import PayloadInstaller
from swarm_agent.payloads.tree import TreeVerifier


@pytest.fixture
def blob_server():
    server = CountingServer(delay_per_chunk=0)
    yield server
    server.stop()


def publish(server: CountingServer, files: dict) -> tuple[str, str]:
    data = tarball(files)
    sha256 = hashlib.sha256(data).hexdigest()
    server.blobs[f"/{sha256}"] = data
    return sha256, f"{server.url}/{sha256}"


def command(sha256: str, url: str, **extra) -> dict:
    return {"type": "deploy_payload", "action": "deploy", "target_id": 1, "payload_type": "toolchain",
            "sha256": sha256, "url": url, "size": 1, "install_root": "", "keep_releases": 2,
            "health": {"kind": "none"}, **extra}


def installer(tmp_path: Path) -> PayloadInstaller:
    return PayloadInstaller(payload_root=tmp_path / "payloads", cache_dir=tmp_path / "cache")


def test_deploy_switches_current_atomically_and_reports_each_state(tmp_path, blob_server):
    sha256, url = publish(blob_server, {"bin/tool": "#!/bin/sh\necho v1\n"})
    states = []
    result = installer(tmp_path).apply(command(sha256, url), lambda state, reason: states.append(state))
    assert result.ok and result.current_sha256 == sha256
    assert states == ["downloading", "installing", "verifying"]
    current = tmp_path / "payloads/toolchain/current"
    assert current.is_symlink() and os.readlink(current) == f"releases/{sha256}"
    assert (current / "bin/tool").read_text() == "#!/bin/sh\necho v1\n"


def test_hash_mismatch_installs_nothing_and_keeps_the_previous_release(tmp_path, blob_server):
    good, good_url = publish(blob_server, {"a.txt": "one"})
    payloads = installer(tmp_path)
    assert payloads.apply(command(good, good_url), lambda *_: None).ok
    other, _ = publish(blob_server, {"a.txt": "two"})
    # The server hands out the bytes of `other` under a URL for a hash they do not have: a corrupted download.
    blob_server.blobs["/corrupt"] = blob_server.blobs[f"/{other}"][:-7] + b"garbage"
    wanted = hashlib.sha256(b"what the release should have been").hexdigest()
    result = payloads.apply(command(wanted, f"{blob_server.url}/corrupt"), lambda *_: None)
    assert not result.ok and result.reason.startswith("hash_mismatch")
    assert payloads.current_sha256(tmp_path / "payloads/toolchain") == good
    assert not (tmp_path / "payloads/toolchain/releases" / wanted).exists()
    assert not list((tmp_path / "cache/bundles").glob(f"{wanted}*.tar.gz"))
    assert not [p for p in (tmp_path / "payloads/toolchain/releases").iterdir() if p.name.startswith(".")]


def test_failed_health_check_goes_back_to_the_previous_release(tmp_path, blob_server):
    first, first_url = publish(blob_server, {"ok": "1"})
    payloads = installer(tmp_path)
    assert payloads.apply(command(first, first_url, health={"kind": "command", "command": "test -f ok"}),
                          lambda *_: None).ok
    second, second_url = publish(blob_server, {"broken": "1"})
    result = payloads.apply(command(second, second_url, health={"kind": "command", "command": "test -f ok",
                                                                 "timeout": 5}), lambda *_: None)
    assert not result.ok and "health check exited 1" in result.reason
    assert payloads.current_sha256(tmp_path / "payloads/toolchain") == first
    # Reverting to the kept previous release is instant: no download.
    requests = blob_server.requests
    back = payloads.apply(command(first, "", action="revert"), lambda *_: None)
    assert back.ok and blob_server.requests == requests


def test_prune_keeps_current_previous_and_the_keep_count(tmp_path, blob_server):
    payloads = installer(tmp_path)
    hashes = []
    for number in range(4):
        sha256, url = publish(blob_server, {"n": str(number)})
        assert payloads.apply(command(sha256, url, keep_releases=2), lambda *_: None).ok
        hashes.append(sha256)
    kept = sorted(p.name for p in (tmp_path / "payloads/toolchain/releases").iterdir() if p.is_dir())
    assert kept == sorted(hashes[-2:])


def test_tampered_tree_reports_another_hash(tmp_path, blob_server):
    sha256, url = publish(blob_server, {"conf/make.conf": "CFLAGS=-O2\n"})
    payloads = installer(tmp_path)
    assert payloads.apply(command(sha256, url), lambda *_: None).ok
    verifier = TreeVerifier()
    releases = tmp_path / "payloads/toolchain/releases"
    assert verifier.reported_hash(releases, sha256) == sha256
    (releases / sha256 / "conf/make.conf").write_text("CFLAGS=-O3\n")
    tampered = verifier.reported_hash(releases, sha256)
    assert tampered != sha256 and len(tampered) == 64
    (releases / sha256 / "conf/make.conf").write_text("CFLAGS=-O2\n")
    assert verifier.reported_hash(releases, sha256) == sha256


def test_hostile_bundle_is_refused_at_unpack(tmp_path, blob_server):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    blob_server.blobs[f"/{sha256}"] = data
    result = installer(tmp_path).apply(command(sha256, f"{blob_server.url}/{sha256}"), lambda *_: None)
    assert not result.ok and "unpack refused" in result.reason
    assert not (tmp_path / "payloads/escape").exists() and not (tmp_path / "payloads/toolchain/current").exists()


def test_a_full_disk_while_unpacking_leaves_the_previous_release_current(tmp_path, blob_server, monkeypatch):
    import errno

    from swarm_agent.payloads import install

    first, first_url = publish(blob_server, {"a": "1"})
    payloads = installer(tmp_path)
    assert payloads.apply(command(first, first_url), lambda *_: None).ok
    second, second_url = publish(blob_server, {"a": "2"})

    def no_space(path, workdir, **kwargs):
        (workdir / "half-written").parent.mkdir(parents=True, exist_ok=True)
        (workdir / "half-written").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(install, "unpack_bundle", no_space)
    result = payloads.apply(command(second, second_url), lambda *_: None)
    assert not result.ok and result.reason.startswith("disk_full")
    assert payloads.current_sha256(tmp_path / "payloads/toolchain") == first
    releases = tmp_path / "payloads/toolchain/releases"
    assert sorted(p.name for p in releases.iterdir() if p.is_dir()) == [first]  # no half-written staging left


def test_staging_left_by_a_killed_agent_is_swept_and_this_process_own_is_kept(tmp_path):
    import os

    from swarm_agent.payloads.install import _sweep_stale_staging

    releases = tmp_path / "releases"
    (releases / ("." + "a" * 64 + ".1.partial") / "half").mkdir(parents=True)  # pid 1: never this agent
    own = releases / ("." + "b" * 64 + f".{os.getpid()}.partial")
    own.mkdir()
    (releases / ("c" * 64)).mkdir()  # a release: never touched
    _sweep_stale_staging(releases)
    assert sorted(path.name for path in releases.iterdir()) == sorted([own.name, "c" * 64])
