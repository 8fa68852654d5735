"""`swarmctl bundle` and `swarmctl workflow`: the real console script against the real uvicorn server and S3."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from bundles.blobstore import BlobStore
from bundles.keys import blob_key
from bundles.models import Bundle
from tenancy.models import Tenant
from workflows.models import WorkflowVersion

SWARMCTL = Path(sys.executable).parent / "swarmctl"


def swarmctl(*args: str, url: str, token: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the installed `swarmctl` console script as a user would."""
    env = dict(os.environ, SWARM_URL=url, SWARM_TOKEN=token)
    result = subprocess.run([str(SWARMCTL), *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"swarmctl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def engine_token(tenant_slug: str) -> str:
    from swarm.core.services import api_token_issue

    tenant, _ = Tenant.objects.get_or_create(slug=tenant_slug, defaults={"name": tenant_slug.title()})
    _, plaintext = api_token_issue(scope="engine", tenant=tenant, name=f"swarmctl-{tenant_slug}")
    return plaintext


def write_tree(root: Path, files: dict[str, str], *, reverse: bool = False) -> Path:
    """Create files in the given (or reversed) order, so creation order differs between trees."""
    items = list(files.items())
    for name, content in reversed(items) if reverse else items:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


SAMPLE = {"main.py": "print('hello')\n", "lib/util.py": "VALUE = 1\n", "lib/data/config.json": "{}\n",
          "README.md": "# hello\n"}


# --- packing (no server) ------------------------------------------------------------------------------


def pack(source: Path, output: Path) -> str:
    result = subprocess.run([str(SWARMCTL), "bundle", "pack", str(source), "-o", str(output)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_packing_is_reproducible_whatever_the_mtimes_order_and_owners(tmp_path):
    first = write_tree(tmp_path / "a", SAMPLE)
    second = write_tree(tmp_path / "b", SAMPLE, reverse=True)
    for index, path in enumerate(sorted(second.rglob("*"))):
        os.utime(path, (1_000_000 + index, 2_000_000 + index * 7))
    (second / "main.py").chmod(0o600)  # group/other bits are normalised away

    digest_a = pack(first, tmp_path / "a.tar.gz")
    digest_b = pack(second, tmp_path / "b.tar.gz")
    assert digest_a == digest_b
    assert digest_a == hashlib.sha256((tmp_path / "a.tar.gz").read_bytes()).hexdigest()
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert pack(first, tmp_path / "again.tar.gz") == digest_a

    raw = (tmp_path / "a.tar.gz").read_bytes()
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[3] & 0x08 == 0, "no file name in the gzip header"
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime is zero"
    with tarfile.open(tmp_path / "a.tar.gz") as archive:
        members = archive.getmembers()
    names = [member.name for member in members]
    assert names == ["README.md", "lib", "lib/data", "lib/data/config.json", "lib/util.py", "main.py"]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert len({m.mtime for m in members}) == 1
    assert all(not m.pax_headers for m in members)
    assert {m.name: m.mode for m in members}["main.py"] == 0o644

    (second / "main.py").chmod(0o700)  # the executable bit is content: it changes the hash
    assert pack(second, tmp_path / "exec.tar.gz") != digest_a
    (first / "main.py").write_text("print('changed')\n")
    assert pack(first, tmp_path / "changed.tar.gz") != digest_a


def test_packing_refuses_links_leaving_the_tree(tmp_path):
    tree = write_tree(tmp_path / "tree", SAMPLE)
    (tree / "escape").symlink_to("../../etc/passwd")
    result = subprocess.run([str(SWARMCTL), "bundle", "pack", str(tree), "-o", str(tmp_path / "x.tar.gz")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "error: link_escapes_root:" in result.stderr
    assert not (tmp_path / "x.tar.gz").exists()


# --- against the live server -----------------------------------------------------------------------


def test_push_directory_registers_then_deduplicates(live_url, tmp_path):
    token = engine_token("acme")
    tree = write_tree(tmp_path / "hello", SAMPLE)
    expected = pack(tree, tmp_path / "expected.tar.gz")

    first = swarmctl("bundle", "push", str(tree), "--tenant", "acme", "--workflow", "hello", "--version", "1.0.0",
                     "--metadata", '{"commit": "abc123"}', "--json", url=live_url, token=token)
    version = json.loads(first.stdout)
    assert version["bundle_hash"] == expected
    assert version["deduplicated"] is False
    assert version["version"] == "1.0.0"
    assert version["metadata"] == {"commit": "abc123"}
    assert version["is_active"] is True
    assert BlobStore().exists(blob_key(expected))

    # Touch every file: a fresh pack of the same tree is the same bundle.
    for path in tree.rglob("*"):
        os.utime(path, None)
    again = swarmctl("bundle", "push", str(tree), "--tenant", "acme", "--workflow", "hello", "--version", "1.0.0",
                     url=live_url, token=token)
    assert again.stdout.startswith("deduplicated: acme/hello 1.0.0")
    assert WorkflowVersion.objects.filter(workflow__slug="hello").count() == 1

    # A tarball is sent as it is, here through the multipart endpoint.
    tarball = write_tree(tmp_path / "v2", {**SAMPLE, "main.py": "print('v2')\n"})
    pack(tarball, tmp_path / "v2.tar.gz")
    second = swarmctl("bundle", "push", str(tmp_path / "v2.tar.gz"), "--tenant", "acme", "--workflow", "hello",
                      "--version", "1.1.0", "--multipart", url=live_url, token=token)
    assert second.stdout.startswith("registered acme/hello 1.1.0")
    assert "inactive" in second.stdout

    info = swarmctl("bundle", "info", expected, "--json", url=live_url, token=token)
    assert json.loads(info.stdout)["size"] == (tmp_path / "expected.tar.gz").stat().st_size


def unsafe_tarball(path: Path) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"owned\n"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize("endpoint", ["raw", "multipart"])
def test_push_unsafe_or_tampered_tarball_exits_1_with_the_rule_code(live_url, tmp_path, endpoint):
    token = engine_token("acme")
    extra = ["--multipart"] if endpoint == "multipart" else []
    unsafe = swarmctl("bundle", "push", str(unsafe_tarball(tmp_path / "unsafe.tar.gz")), "--tenant", "acme",
                      "--workflow", "hello", "--version", "1.0.0", *extra, url=live_url, token=token, check=False)
    assert unsafe.returncode == 1
    assert unsafe.stderr.startswith("error: path_traversal:"), unsafe.stderr

    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(gzip.compress(b"this is not a tar archive" * 100))
    tampered = swarmctl("bundle", "push", str(corrupt), "--tenant", "acme", "--workflow", "hello",
                        "--version", "1.0.0", *extra, url=live_url, token=token, check=False)
    assert tampered.returncode == 1
    assert tampered.stderr.startswith("error: not_a_tar_gz:"), tampered.stderr
    assert Bundle.objects.count() == 0
    assert not WorkflowVersion.objects.exists()
    assert not [blob for blob in BlobStore().list_blobs("bundles/sha256/")
                if blob.key in {blob_key(hashlib.sha256(corrupt.read_bytes()).hexdigest())}]


def test_push_with_a_bad_token_or_no_server_exits_1(live_url, tmp_path):
    tree = write_tree(tmp_path / "hello", SAMPLE)
    push = ("bundle", "push", str(tree), "--tenant", "acme", "--workflow", "hello", "--version", "1.0.0")
    refused = swarmctl(*push, url=live_url, token="not-a-token", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: authentication_failed:"), refused.stderr
    from swarm.embedded import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = swarmctl(*push, url=nowhere, token="x", check=False)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"error: connection_failed: cannot reach the control plane at {nowhere} "
                                         "(SWARM_URL)"), unreachable.stderr
    assert "make run" in unreachable.stderr
    explicit = swarmctl(*push, "--url", nowhere, url="", token="x", check=False)
    assert f"at {nowhere} (--url)" in explicit.stderr, explicit.stderr
    assert not WorkflowVersion.objects.exists()


def test_connection_failure_without_swarm_url_names_the_default(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "SWARM_URL"}
    # The default address is make run's; whether or not one runs here, a closed port on it names itself.
    result = subprocess.run([str(SWARMCTL), "drone", "list"], env={**env, "SWARM_TOKEN": "x"},
                            capture_output=True, text=True, timeout=60)
    if "connection_failed" not in result.stderr:
        pytest.skip("something listens on 127.0.0.1:8000 here")
    assert "at http://127.0.0.1:8000 (the default; set SWARM_URL or --url for another)" in result.stderr


def test_same_bytes_as_a_new_version_exits_1_and_a_missing_tenant_is_named(live_url, tmp_path):
    token = engine_token("acme")
    tree = write_tree(tmp_path / "hello", SAMPLE)
    push = ("bundle", "push", str(tree), "--workflow", "hello")
    swarmctl(*push, "--tenant", "acme", "--version", "1.0.0", url=live_url, token=token)
    relabelled = swarmctl(*push, "--tenant", "acme", "--version", "9.9.9", url=live_url, token=token, check=False)
    assert relabelled.returncode == 1
    assert relabelled.stderr.startswith("error: same_bytes: These bytes are already version 1.0.0"), relabelled.stderr
    assert sorted(WorkflowVersion.objects.values_list("version", flat=True)) == ["1.0.0"]

    from swarm.core.services import api_token_issue
    _, admin = api_token_issue(scope="admin", name="swarmctl-admin")
    missing = swarmctl(*push, "--tenant", "nosuch", "--version", "1.0.0", url=live_url, token=admin, check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: not_found: No tenant 'nosuch'."), missing.stderr
    assert "--create-tenant" in missing.stderr
    assert not Tenant.objects.filter(slug="nosuch").exists()
    created = swarmctl(*push, "--tenant", "nosuch", "--version", "1.0.0", "--create-tenant", url=live_url,
                       token=admin)
    assert created.stdout.startswith("registered nosuch/hello 1.0.0")


def test_raw_put_refuses_a_body_that_does_not_match_its_digest(live_url):
    token = engine_token("acme")
    headers = {"Authorization": f"Bearer {token}"}
    body = b"\x1f\x8b" + os.urandom(1000)
    wrong = "ab" * 32
    response = httpx.put(f"{live_url}/api/v1/bundles/{wrong}", params={"tenant": "acme", "workflow": "w",
                         "version": "1.0.0"}, content=body, headers=headers, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"] == "hash_mismatch"

    chunked = httpx.put(f"{live_url}/api/v1/bundles/{wrong}", params={"tenant": "acme", "workflow": "w",
                        "version": "1.0.0"}, content=iter([body]), headers=headers, timeout=30)
    assert chunked.status_code == 411
    assert chunked.json()["error"] == "length_required"
    assert not BlobStore().exists(blob_key(wrong))


def test_workflow_activate_rollback_and_active_download(live_url, tmp_path):
    token = engine_token("acme")
    for label, body in (("1.0.0", "print(1)\n"), ("1.1.0", "print(2)\n")):
        tree = write_tree(tmp_path / label, {"main.py": body})
        swarmctl("bundle", "push", str(tree), "--tenant", "acme", "--workflow", "hello", "--version", label,
                 "--quiet", url=live_url, token=token)

    def active() -> dict:
        return json.loads(swarmctl("workflow", "active", "acme/hello", url=live_url, token=token).stdout)

    assert active()["version"] == "1.0.0"
    activated = swarmctl("workflow", "activate", "acme/hello", "1.1.0", url=live_url, token=token)
    assert activated.stdout.startswith("activated acme/hello 1.1.0")
    assert active()["version"] == "1.1.0"
    rolled = swarmctl("workflow", "rollback", "acme/hello", "--json", url=live_url, token=token)
    assert json.loads(rolled.stdout)["version"] == "1.0.0"

    described = active()
    assert described["version"] == "1.0.0"
    downloaded = httpx.get(described["bundle_url"], timeout=30)
    assert downloaded.status_code == 200
    assert hashlib.sha256(downloaded.content).hexdigest() == described["bundle_hash"]
    with tarfile.open(fileobj=io.BytesIO(downloaded.content)) as archive:
        assert archive.extractfile("main.py").read() == b"print(1)\n"

    listing = swarmctl("workflow", "list", "acme", url=live_url, token=token)
    assert "acme/hello" in listing.stdout and "active 1.0.0" in listing.stdout
    versions = json.loads(swarmctl("workflow", "versions", "acme/hello", "--json", url=live_url, token=token).stdout)
    assert [(v["version"], v["is_active"]) for v in versions] == [("1.1.0", False), ("1.0.0", True)]

    missing = swarmctl("workflow", "activate", "acme/hello", "9.9.9", url=live_url, token=token, check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("error: not_found:")


def test_another_tenants_workflow_is_not_found(live_url, tmp_path):
    token = engine_token("acme")
    tree = write_tree(tmp_path / "hello", SAMPLE)
    swarmctl("bundle", "push", str(tree), "--tenant", "acme", "--workflow", "hello", "--version", "1.0.0",
             url=live_url, token=token)
    outsider = engine_token("globex")
    for args in (("workflow", "active", "acme/hello"), ("workflow", "rollback", "acme/hello"),
                 ("workflow", "list", "acme")):
        result = swarmctl(*args, url=live_url, token=outsider, check=False)
        assert result.returncode == 1, args
        assert result.stderr.startswith("error: not_found:"), (args, result.stderr)
    refused = swarmctl("bundle", "push", str(tree), "--tenant", "acme", "--workflow", "hello", "--version", "2.0.0",
                       url=live_url, token=outsider, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error: not_found:")


# --- the agent package stays free of Django ---------------------------------------------------------


def test_no_swarm_agent_module_imports_django():
    script = (
        "import importlib, pkgutil, sys, swarm_agent\n"
        "names = [info.name for info in pkgutil.walk_packages(swarm_agent.__path__, 'swarm_agent.')]\n"
        "assert len(names) >= 8, names\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not leaked, leaked\n"
        "print(len(names))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                            cwd="/")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 8


# --- streamed request bodies (swarm/core/streaming_asgi.py) -------------------------------------------


def test_streamed_upload_refused_early_still_answers_with_json(live_url):
    body = os.urandom(4 * 1024 * 1024)
    digest = hashlib.sha256(body).hexdigest()
    response = httpx.put(f"{live_url}/api/v1/bundles/{digest}", params={"tenant": "acme", "workflow": "w",
                         "version": "1.0.0"}, content=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"
    assert httpx.get(f"{live_url}/healthz", timeout=10).status_code == 200


def test_client_disconnecting_mid_upload_leaves_nothing_behind(live_url):
    import socket
    import time
    from urllib.parse import urlparse

    token = engine_token("acme")
    digest = hashlib.sha256(b"never completed").hexdigest()
    address = urlparse(live_url)
    announced = 64 * 1024 * 1024
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            f"PUT /api/v1/bundles/{digest}?tenant=acme&workflow=cut&version=1.0.0 HTTP/1.1\r\n"
            f"Host: {address.netloc}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/gzip\r\n"
            f"Content-Length: {announced}\r\n\r\n".encode()
        )
        chunk = os.urandom(1024 * 1024)
        for _ in range(20):  # more than one S3 part, well short of the announced length
            connection.sendall(chunk)
        time.sleep(0.5)

    client = BlobStore().s3_client()
    bucket = BlobStore().storage.bucket_name
    deadline = time.monotonic() + 20
    while True:
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=blob_key(digest)).get("Uploads", [])
        if not uploads or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert uploads == [], "the aborted upload's S3 multipart upload was not aborted"
    assert not BlobStore().exists(blob_key(digest))
    assert not Bundle.objects.filter(sha256=digest).exists()
    assert not WorkflowVersion.objects.filter(workflow__slug="cut").exists()
    assert httpx.get(f"{live_url}/healthz", timeout=10).status_code == 200


def test_multi_part_bundle_arrives_intact_on_s3(live_url, tmp_path, settings):
    """Bigger than several S3 parts: the pooled part buffers must reassemble the exact bytes."""
    token = engine_token("acme")
    tree = tmp_path / "big"
    tree.mkdir()
    (tree / "main.py").write_text("print('big')\n")
    (tree / "payload.bin").write_bytes(os.urandom(3 * settings.SWARM_S3_PART_SIZE + 12345))
    pushed = json.loads(swarmctl("bundle", "push", str(tree), "--tenant", "acme", "--workflow", "big",
                                 "--version", "1.0.0", "--json", url=live_url, token=token).stdout)
    assert pushed["bundle_size"] > 3 * settings.SWARM_S3_PART_SIZE
    described = json.loads(swarmctl("workflow", "active", "acme/big", url=live_url, token=token).stdout)
    downloaded = httpx.get(described["bundle_url"], timeout=60)
    assert len(downloaded.content) == pushed["bundle_size"]
    assert hashlib.sha256(downloaded.content).hexdigest() == pushed["bundle_hash"] == described["bundle_hash"]
