"""Package runs: assets by URL and sha256 (mismatch, a hanging URL, stored once), platforms no drone can
build, the per-platform steps, tenant scoping of /packages. The fleet end to end is test_packaging_live.py."""
from __future__ import annotations

import pytest

from conftest import token_client
from deployments.choices import PackageState
from deployments.models import PackageRun
from deployments.packaging import package_advance, package_request
from deployments.packaging.steps import GO_TARGETS, platform_build
from deployments.tests.package_fixtures import AssetServer, go_hello_profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def asset_server():
    servers = []

    def start(body: bytes = b"", **options) -> AssetServer:
        servers.append(AssetServer(body, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _run(version, **options) -> PackageRun:
    run = package_request(profile=version.profile, platforms=options.pop("platforms", ["linux-x64", "linux-arm64"]),
                          register_as="workflow", git_url="file:///nonexistent/repo", actor="test", **options)
    while package_advance(run_id=run.pk) is not None:
        pass
    return PackageRun.objects.get(pk=run.pk)


def test_an_asset_whose_bytes_do_not_match_fails_the_run_naming_it(tenant, asset_server):
    server = asset_server(b"the real bytes")
    version = go_hello_profile(tenant, assets=[server.asset("sounds.ogg", sha256="ab" * 32)])
    run = _run(version)
    assert run.state == PackageState.FAILED
    assert "asset assets/sounds.ogg" in run.reason and "not the manifest's " + "ab" * 32 in run.reason
    assert {row.state for row in run.platforms.all()} == {PackageState.FAILED}
    assert not run.platforms.exclude(build=None).exists(), "nothing was built"


def test_a_hanging_asset_url_times_out_with_a_clear_reason(tenant, asset_server, settings):
    settings.SWARM_PACKAGE_ASSET_TIMEOUT = 1
    server = asset_server(hang=True)
    version = go_hello_profile(tenant, assets=[{"path": "assets/big.bin", "url": server.url("big.bin"),
                                                "sha256": "cd" * 32, "size_bytes": 10}])
    run = _run(version)
    assert run.state == PackageState.FAILED
    assert f"asset assets/big.bin: {server.url('big.bin')} timed out after 1 s" in run.reason


def test_an_asset_is_stored_once_and_a_platform_no_drone_can_build_says_which_labels_are_missing(
        tenant, asset_server):
    from builds.tests.factories import make_drone

    make_drone("go-drone", labels=["go"])
    server = asset_server(b"wheel sounds")
    version = go_hello_profile(tenant, assets=[server.asset("sounds.ogg")], platforms=["darwin-arm64"])
    first = _run(version, platforms=["darwin-arm64"], labels={"darwin-arm64": ["macos"]})
    assert server.hits == 1 and first.assets[0]["downloaded"] is True
    assert first.state == PackageState.FAILED
    reason = first.platforms.get().reason
    assert reason.startswith("no drone can build darwin-arm64: it needs the labels go, macos, sandbox:bubblewrap")
    assert reason.endswith("no drone has macos"), reason
    assert "darwin-arm64: no drone can build" in first.reason

    second = _run(version, platforms=["darwin-arm64"], labels={"darwin-arm64": ["macos"]})
    assert server.hits == 1, "the second run reads the stored asset"
    assert second.assets[0]["downloaded"] is False
    assert "already stored, not downloaded" in second.log


def test_steps_cross_compile_go_per_platform_and_fill_custom_placeholders(tenant):
    from deployments import selectors

    manifest = selectors.profile_manifest(version=go_hello_profile(tenant, platforms=list(GO_TARGETS))).document
    for platform, (goos, goarch) in {"linux-x64": ("linux", "amd64"), "linux-arm64": ("linux", "arm64"),
                                     "win-x64": ("windows", "amd64"), "darwin-arm64": ("darwin", "arm64")}.items():
        config = platform_build(manifest, platform)
        assert f"GOARCH={goarch} GOOS={goos} go build" in config["steps"][0]
        assert config["artifacts"] == [manifest["services"][0]["binaries"][platform]["path"]]
        assert config["labels"] == ["go"]
    assert config["artifacts"][0].endswith("/darwin-arm64/go-hello-api")
    assert platform_build(manifest, "win-x64")["artifacts"][0].endswith(".exe")
    custom = {"services": [{"id": "tool", "binaries": {"linux-arm64": {"path": "bin/tool"}},
                            "build": {"type": "custom", "source_dir": "tool", "args": ["make", "PLATFORM={{platform}}",
                                                                                       "GOARCH={{goarch}}"]}}]}
    step = platform_build(custom, "linux-arm64", extra_labels=["make"])
    assert step["steps"][0].endswith("cd tool && make PLATFORM=linux-arm64 GOARCH=arm64")
    assert step["labels"] == ["make"]


def test_package_api_answers_202_and_another_tenants_package_is_a_404(tenant, other_tenant):
    version = go_hello_profile(tenant)
    own = token_client("engine", tenant)
    response = own.post(f"/api/v1/profiles/{version.profile_id}/package",
                        {"platforms": ["linux-x64"], "register_as": "workflow", "git_url": "file:///tmp/x"},
                        format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["logs_url"] == f"/api/v1/packages/{body['package_id']}/logs"
    shown = own.get(f"/api/v1/packages/{body['package_id']}")
    assert shown.status_code == 200 and shown.json()["platforms"][0]["platform"] == "linux-x64"
    other = token_client("engine", other_tenant)
    for path in (f"/api/v1/packages/{body['package_id']}", f"/api/v1/packages/{body['package_id']}/logs"):
        assert other.get(path).status_code == 404
    assert other.post(f"/api/v1/packages/{body['package_id']}/cancel").status_code == 404
    assert other.post(f"/api/v1/profiles/{version.profile_id}/package",
                      {"platforms": ["linux-x64"], "register_as": "workflow", "git_url": "file:///tmp/x"},
                      format="json").status_code == 404
    canceled = own.post(f"/api/v1/packages/{body['package_id']}/cancel")
    assert canceled.status_code == 202 and canceled.json()["state"] == "canceled"
