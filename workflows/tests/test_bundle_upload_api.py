"""POST /api/v1/bundles: streaming upload, dedup, conflicts, every bad-input rule."""
import hashlib
import io
import tarfile

import httpx
import pytest

from bundles.blobstore import BlobStore
from bundles.keys import blob_key
from bundles.models import Bundle
from conftest import make_bundle, upload
from tenancy.models import Tenant
from workflows.models import Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db


def stored_keys() -> set[str]:
    return {blob.key for blob in BlobStore().list_blobs("bundles/")}


def test_upload_registers_version_and_stores_blob_once(engine_api, bundle_bytes):
    digest = hashlib.sha256(bundle_bytes).hexdigest()
    response = upload(engine_api, bundle_bytes, sha256=digest)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["bundle_hash"] == digest
    assert body["deduplicated"] is False
    assert body["version"] == "1.0.0"
    assert body["is_active"] is True  # the first version of a workflow becomes active
    assert BlobStore().exists(blob_key(digest))
    with BlobStore().open(blob_key(digest)) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == digest

    again = upload(engine_api, bundle_bytes, version="1.0.0")
    assert again.status_code == 200
    assert again.json()["deduplicated"] is True
    assert again.json()["id"] == body["id"]
    assert WorkflowVersion.objects.count() == 1
    assert Bundle.objects.count() == 1


def test_same_bytes_under_another_label_is_409_naming_the_version_they_are(engine_api, bundle_bytes):
    first = upload(engine_api, bundle_bytes, version="1.0.0")
    second = upload(engine_api, bundle_bytes, version="1.0.1")
    assert second.status_code == 409
    body = second.json()
    assert body["error"] == "same_bytes" and body["field"] == "version"
    assert "already version 1.0.0" in body["detail"] and "1.0.1 was not created" in body["detail"]
    assert list(WorkflowVersion.objects.values_list("version", flat=True)) == ["1.0.0"]
    assert first.status_code == 201


@pytest.mark.parametrize("scope", ["admin", "engine-unbound", "engine"])
def test_push_to_a_tenant_that_does_not_exist_is_404_for_every_scope(scope, bundle_bytes, tenant):
    from conftest import token_client
    client = token_client("engine" if scope == "engine-unbound" else scope, tenant if scope == "engine" else None)
    response = upload(client, bundle_bytes, tenant="nosuch")
    assert response.status_code == 404, response.content
    assert response.json()["field"] == "tenant" and "nosuch" in response.json()["detail"]
    assert not Tenant.objects.filter(slug="nosuch").exists()
    assert not Workflow.objects.exists()
    assert blob_key(hashlib.sha256(bundle_bytes).hexdigest()) not in stored_keys()


def test_create_tenant_asked_for_explicitly_creates_it_for_unbound_tokens_only(admin_api, engine_api, bundle_bytes):
    refused = upload(engine_api, bundle_bytes, tenant="fresh", create_tenant="true")
    assert refused.status_code == 404  # a bound token never creates (nor learns of) another tenant
    created = upload(admin_api, bundle_bytes, tenant="fresh", create_tenant="true")
    assert created.status_code == 201, created.content
    assert Tenant.objects.filter(slug="fresh").exists()


def test_same_bytes_for_two_workflows_share_one_blob(engine_api, bundle_bytes):
    assert upload(engine_api, bundle_bytes, workflow="a").status_code == 201
    assert upload(engine_api, bundle_bytes, workflow="b").status_code == 201
    assert Bundle.objects.count() == 1
    assert WorkflowVersion.objects.count() == 2
    digest = hashlib.sha256(bundle_bytes).hexdigest()
    assert [k for k in stored_keys() if digest in k] == [blob_key(digest)]


def test_label_reused_with_other_bytes_is_409_and_keeps_nothing(engine_api):
    assert upload(engine_api, make_bundle(), version="2.0.0").status_code == 201
    before = stored_keys()
    other = make_bundle()
    response = upload(engine_api, other, version="2.0.0")
    assert response.status_code == 409
    assert response.json()["error"] == "version_exists"
    assert stored_keys() == before
    assert not Bundle.objects.filter(sha256=hashlib.sha256(other).hexdigest()).exists()


@pytest.mark.parametrize("declared_in", ["form", "query"])
def test_declared_hash_mismatch_is_400_and_keeps_nothing(engine_api, bundle_bytes, declared_in):
    wrong = "0" * 64
    before = stored_keys()
    if declared_in == "form":
        response = upload(engine_api, bundle_bytes, sha256=wrong)
    else:
        response = upload(engine_api, bundle_bytes, query=f"?sha256={wrong}")
    assert response.status_code == 400
    assert response.json()["error"] == "hash_mismatch"
    assert response.json()["field"] == "sha256"
    assert stored_keys() == before
    assert not WorkflowVersion.objects.exists()
    assert not Bundle.objects.exists()


def _tar_gz(add) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        add(archive)
    return buffer.getvalue()


def _member(name, *, type_=tarfile.REGTYPE, linkname="", mode=0o644, data=b"x"):
    def add(archive):
        info = tarfile.TarInfo(name)
        info.type = type_
        info.linkname = linkname
        info.mode = mode
        if type_ == tarfile.REGTYPE:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        else:
            archive.addfile(info)
    return _tar_gz(add)


BAD_BUNDLES = {
    "not_a_tar_gz": b"this is not a tarball at all",
    "absolute_path": _member("/etc/passwd"),
    "path_traversal": _member("../../escape.sh"),
    "link_escapes_root": _member("evil", type_=tarfile.SYMTYPE, linkname="../../etc/shadow"),
    "hardlink_escapes_root": _member("evil", type_=tarfile.LNKTYPE, linkname="../outside"),
    "absolute_symlink": _member("evil", type_=tarfile.SYMTYPE, linkname="/etc/shadow"),
    "device_file": _member("dev/sda", type_=tarfile.BLKTYPE),
    "char_device": _member("dev/null", type_=tarfile.CHRTYPE),
    "fifo": _member("pipe", type_=tarfile.FIFOTYPE),
    "special_file": _member("volume-label", type_=b"V"),  # a type tarfile keeps but is neither file nor link
    "setuid_bit": _member("tool", mode=0o4755),
    "setgid_bit": _member("tool", mode=0o2755),
    "plain_gzip": __import__("gzip").compress(b"just gzip, no tar inside" * 100),
    "empty_bundle": _tar_gz(lambda archive: None),
    "truncated": make_bundle({"main.py": "print('x')\n" * 500})[:-40],
}
EXPECTED_CODE = {
    "hardlink_escapes_root": "link_escapes_root",
    "absolute_symlink": "link_escapes_root",
    "char_device": "device_file",
    "setgid_bit": "setuid_bit",
    "plain_gzip": "not_a_tar_gz",
    "truncated": "not_a_tar_gz",
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_unsafe_bundle_is_refused_with_rule_code(engine_api, case):
    before = stored_keys()
    response = upload(engine_api, BAD_BUNDLES[case])
    assert response.status_code == 400, response.content
    assert response.json()["error"] == EXPECTED_CODE.get(case, case)
    assert response.json()["field"] == "bundle"
    assert stored_keys() == before
    assert not WorkflowVersion.objects.exists() and not Bundle.objects.exists()
    # Nothing kept means no row at all: not even the workflow a first push would have created.
    assert not Workflow.objects.exists()


def test_too_many_members_is_a_tar_bomb(engine_api, settings):
    settings.SWARM_BUNDLE_MAX_MEMBERS = 5
    bomb = make_bundle({f"f{i}.txt": "x" for i in range(6)})
    response = upload(engine_api, bomb)
    assert response.status_code == 400
    assert response.json()["error"] == "too_many_members"


def test_too_many_unpacked_bytes_is_a_tar_bomb(engine_api, settings):
    settings.SWARM_BUNDLE_MAX_UNPACKED_BYTES = 1024 * 1024
    bomb = make_bundle({"zeros.bin": b"\0" * (2 * 1024 * 1024)})  # compresses to a few KiB
    assert len(bomb) < 64 * 1024
    response = upload(engine_api, bomb)
    assert response.status_code == 400
    assert response.json()["error"] == "too_large_unpacked"


def test_bundle_over_upload_limit_is_413(engine_api, settings):
    settings.SWARM_BUNDLE_MAX_BYTES = 2048
    big = make_bundle({"noise.bin": __import__("os").urandom(8192)})
    before = stored_keys()
    response = upload(engine_api, big)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert stored_keys() == before


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"version": "one"}, "invalid_version", "version"),
        ({"metadata": "{not json"}, "invalid_metadata", "metadata"),
        ({"metadata": "[1, 2]"}, "invalid_metadata", "metadata"),
        ({"workflow": ""}, "missing_field", "workflow"),
    ],
)
def test_bad_form_fields_are_named(engine_api, bundle_bytes, fields, code, field):
    response = upload(engine_api, bundle_bytes, **fields)
    assert response.status_code == 400
    assert response.json() == {"error": code, "detail": response.json()["detail"], "field": field}
    assert not Bundle.objects.exists()


def test_missing_file_is_named(engine_api):
    response = engine_api.post("/api/v1/bundles", {"tenant": "acme", "workflow": "w", "version": "1.0.0"},
                               format="multipart")
    assert response.status_code == 400
    assert response.json()["field"] == "bundle"


def test_local_storage_upload_and_signed_range_download(engine_api, local_blob_storage, bundle_bytes, client):
    response = upload(engine_api, bundle_bytes)
    assert response.status_code == 201
    digest = response.json()["bundle_hash"]
    assert (local_blob_storage / blob_key(digest)).read_bytes() == bundle_bytes
    url = engine_api.get(f"/api/v1/bundles/{digest}").json()["url"]
    path = url.split("127.0.0.1:8000", 1)[1]
    full = client.get(path)
    assert full.status_code == 200
    assert b"".join(full.streaming_content) == bundle_bytes
    part = client.get(path, HTTP_RANGE="bytes=10-19")
    assert part.status_code == 206
    assert b"".join(part.streaming_content) == bundle_bytes[10:20]
    assert part["Content-Range"] == f"bytes 10-19/{len(bundle_bytes)}"
    forged = client.get(path.replace("signature=", "signature=0"))
    assert forged.status_code == 403
    assert forged.json()["error"] == "invalid_signature"


def test_s3_presigned_url_downloads_exact_bytes(engine_api, bundle_bytes):
    response = upload(engine_api, bundle_bytes)
    workflow_id = response.json()["workflow_id"]
    active = engine_api.get(f"/api/v1/workflows/{workflow_id}/active").json()
    fetched = httpx.get(active["bundle_url"])
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == active["bundle_hash"]


def test_head_and_get_bundle(engine_api, bundle_bytes, caplog):
    digest = upload(engine_api, bundle_bytes).json()["bundle_hash"]
    assert engine_api.head(f"/api/v1/bundles/{digest}").status_code == 200
    with caplog.at_level("INFO", logger="django.request"):
        assert engine_api.head(f"/api/v1/bundles/{'a' * 64}").status_code == 404
        assert engine_api.get(f"/api/v1/bundles/{'b' * 64}").status_code == 404
    # HEAD's "not stored" is every push's first question, not a fault; a GET of a missing bundle still is.
    assert [record.getMessage() for record in caplog.records if record.name == "django.request"] == [
        f"Not Found: /api/v1/bundles/{'b' * 64}"]
    body = engine_api.get(f"/api/v1/bundles/{digest}").json()
    assert body["size"] == len(bundle_bytes)
    assert body["url"].startswith("http")


# The version fields of an upload were read as they came: each of these was a 500 (a RecursionError, or
# PostgreSQL refusing a NUL or a label past its column), or a tenant whose slug is no slug.
@pytest.mark.parametrize("fields, error, field", [
    ({"metadata": "[" * 5000 + "]" * 5000}, "too_deep", "metadata"),
    ({"metadata": '{"commit": "a\\u0000b"}'}, "invalid_text", "metadata.commit"),
    ({"metadata": "[1]"}, "invalid_metadata", "metadata"),
    ({"metadata": "{"}, "invalid_metadata", "metadata"),
    ({"tenant": "ac\x00me"}, "invalid_text", "tenant"),
    ({"tenant": "a b/.."}, "invalid", "tenant"),
    ({"workflow": "../x"}, "invalid", "workflow"),
    ({"entrypoint": "ma\x00in.py"}, "invalid_text", "entrypoint"),
    ({"version": "1.0.0-" + "a" * 200}, "max_length", "version"),
    ({"runtime": "bogus"}, "invalid_choice", "runtime"),
    ({"activate": "maybe"}, "invalid", "activate"),
    ({"activte": "true"}, "unknown_field", "activte"),
])
def test_upload_version_fields_are_checked_and_a_refusal_keeps_nothing(admin_api, fields, error, field):
    before = stored_keys()
    response = upload(admin_api, make_bundle(), **fields)
    assert response.status_code == 400, response.content
    assert (response.json()["error"], response.json()["field"]) == (error, field)
    assert stored_keys() == before and not Bundle.objects.exists() and not WorkflowVersion.objects.exists()
    assert not Workflow.objects.exists()


def test_upload_without_a_version_names_the_missing_field(admin_api):
    response = admin_api.post("/api/v1/bundles", {"tenant": "acme", "workflow": "hello",
                                                  "bundle": io.BytesIO(make_bundle())}, format="multipart")
    assert response.status_code == 400 and response.json() == {**response.json(), "error": "missing_field",
                                                               "field": "version"}


def _zeros_bundle(unpacked_bytes: int) -> bytes:
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    member = tarfile.TarInfo("zeros.bin")
    member.size = unpacked_bytes
    parts = [compressor.compress(member.tobuf())]
    block = bytes(1024 * 1024)
    for _ in range(unpacked_bytes // len(block)):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(1024)) + compressor.flush())
    return b"".join(parts)


def test_two_gib_of_zeros_in_two_megabytes_is_a_decompression_bomb(engine_api):
    """Issue 10: accepted before (under the 8 GiB absolute limit); refused by ratio now, keeping nothing."""
    bomb = _zeros_bundle(2 * 1024**3)
    assert len(bomb) < 4 * 1024 * 1024
    before = stored_keys()
    response = upload(engine_api, bomb)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "decompression_bomb" and body["field"] == "bundle"
    assert "200:1" in body["detail"] and "SWARM_BUNDLE_MAX_RATIO" in body["detail"]
    assert stored_keys() == before and not Bundle.objects.exists() and not Workflow.objects.exists()


def test_the_ratio_limit_is_a_setting(engine_api, settings):
    settings.SWARM_BUNDLE_RATIO_FLOOR_BYTES = 4 * 1024 * 1024
    response = upload(engine_api, _zeros_bundle(8 * 1024 * 1024))
    assert response.json()["error"] == "decompression_bomb"
    settings.SWARM_BUNDLE_MAX_RATIO = 10**6
    assert upload(engine_api, _zeros_bundle(8 * 1024 * 1024)).status_code == 201


def test_a_client_gone_before_registration_registers_nothing(engine_api, bundle_bytes):
    import threading

    from swarm.core.streaming_asgi import CLIENT_GONE_META_KEY

    gone = threading.Event()
    gone.set()
    before = stored_keys()
    form = {"tenant": "acme", "workflow": "hello", "version": "1.0.0", "bundle": io.BytesIO(bundle_bytes)}
    form["bundle"].name = "bundle.tar.gz"
    response = engine_api.post("/api/v1/bundles", form, format="multipart", **{CLIENT_GONE_META_KEY: gone})
    assert response.json()["error"] == "client_disconnected"
    assert stored_keys() == before
    assert not Bundle.objects.exists() and not WorkflowVersion.objects.exists() and not Workflow.objects.exists()
