"""The deployment manager's API with real tokens: catalogs (upload, git), analyses, profiles, manifests, schema.

Each bad input of issue 14 that reaches the API is a test here: cycles, missing dependencies,
unsatisfiable ranges, a file that is not JSON / 50 MB / 10,000 levels deep, a hostile tarball,
an unknown tier, a swap to a resource that does not exist, another tenant's profile, an
infrastructure secret left in.
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import pytest

from bundles.models import Bundle
from conftest import token_client
from deployments.manifest import manifest_schema
from deployments.models import CatalogFetch, CatalogSnapshot, DeploymentProfile, ProfileVersion
from deployments.tests.conftest import catalog, sample_files, scenario_file, tarball

pytestmark = pytest.mark.django_db

SAMPLE_SHA256 = "ffdce686e76a6e62f5bd4a8901b94b10cdc17f005ab8a42bbd4028c46d069d7d"


def upload(client, data: bytes, **fields):
    archive = io.BytesIO(data)
    archive.name = "catalog.tar.gz"
    return client.post("/api/v1/catalogs", {"bundle": archive, **fields}, format="multipart")


@pytest.fixture
def acme(tenant):
    return token_client("engine", tenant)


@pytest.fixture
def globex(other_tenant):
    return token_client("engine", other_tenant)


@pytest.fixture
def sample_snapshot(acme) -> dict:
    response = upload(acme, tarball(sample_files(), prefix="catalog"))
    assert response.status_code == 201, response.json()
    return response.json()["snapshot"]


def create_profile(client, snapshot_sha256: str, **fields):
    body = {"slug": "wheel", "snapshot": snapshot_sha256, "scenario": "picker-wheel", "tier": "tier-2-desktop",
            **fields}
    return client.post("/api/v1/profiles", body, format="json")


# --- catalogs -----------------------------------------------------------------------------------


def test_an_uploaded_catalog_is_a_snapshot_kept_in_the_bundle_store_and_a_reimport_is_a_no_op(acme, sample_snapshot):
    assert sample_snapshot["sha256"] == SAMPLE_SHA256
    assert (sample_snapshot["scenario_count"], sample_snapshot["resource_count"]) == (2, 6)
    stored = CatalogSnapshot.objects.get(sha256=SAMPLE_SHA256)
    assert stored.bundle.sha256 == sample_snapshot["bundle_sha256"]
    assert not Bundle.objects.unreferenced().filter(pk=stored.bundle_id).exists()
    # Other bytes of the same tree (no top folder, other order): the same snapshot, nothing parsed again.
    again = upload(acme, tarball(sample_files(), reverse=True))
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["snapshot"]["id"] == sample_snapshot["id"]
    listing = acme.get("/api/v1/catalogs").json()
    assert [row["sha256"] for row in listing["results"]] == [SAMPLE_SHA256]
    detail = acme.get(sample_snapshot["url"]).json()
    assert {"scenario:picker-wheel", "resource:postgres"} <= {entry["key"] for entry in detail["entries"]}
    assert detail["problems"] == []


def test_files_with_problems_are_reported_per_file_and_the_rest_imports(acme):
    files = sample_files()
    files["scenarios/broken/.vrooli/service.json"] = b"{not json"
    files["scenarios/deep/.vrooli/service.json"] = b"[" * 10_000 + b"]" * 10_000
    files["scenarios/huge/.vrooli/service.json"] = b'{"a": "' + b" " * (50 * 1024 * 1024) + b'"}'
    response = upload(acme, tarball(files))
    assert response.status_code == 201, response.json()
    problems = {problem["path"]: problem for problem in response.json()["problems"]}
    assert problems["scenarios/broken/.vrooli/service.json"]["code"] == "parse_error"
    assert problems["scenarios/deep/.vrooli/service.json"]["code"] == "too_deep"
    assert problems["scenarios/huge/.vrooli/service.json"]["code"] == "too_large"
    assert all("pointer" in problem and problem["message"] for problem in problems.values())
    assert response.json()["snapshot"]["invalid_count"] == 3 and response.json()["snapshot"]["scenario_count"] == 2


def test_a_hostile_tarball_is_refused_whole_and_leaves_nothing(acme):
    evil = tarfile.TarInfo("../../etc/cron.d/evil")
    evil.size = 3
    response = upload(acme, tarball(sample_files(), members=[evil]))
    assert response.status_code == 400
    assert response.json()["error"] == "path_traversal" and response.json()["field"] == "bundle"
    assert not CatalogSnapshot.objects.exists() and not Bundle.objects.exists()


def test_an_upload_without_the_bundle_field_or_with_an_unknown_field_says_what_to_send(acme):
    missing = acme.post("/api/v1/catalogs", {"strict": "true"}, format="multipart")
    assert missing.status_code == 400 and missing.json()["field"] == "bundle"
    unknown = upload(acme, tarball(sample_files()), colour="blue")
    assert unknown.status_code == 400 and unknown.json()["error"] == "unknown_field"
    assert not CatalogSnapshot.objects.exists()


def test_a_strict_upload_refuses_a_catalog_with_a_broken_file(acme):
    files = {**sample_files(), "scenarios/broken/.vrooli/service.json": b"{"}
    response = upload(acme, tarball(files), strict="true")
    assert response.status_code == 400 and response.json()["error"] == "catalog_problems"
    assert response.json()["problems"][0]["path"] == "scenarios/broken/.vrooli/service.json"
    assert not CatalogSnapshot.objects.exists()


def test_another_tenant_sees_neither_the_snapshot_nor_its_analysis(globex, sample_snapshot):
    assert globex.get("/api/v1/catalogs").json()["count"] == 0
    assert globex.get(sample_snapshot["url"]).status_code == 404
    response = globex.get(f"/api/v1/scenarios/picker-wheel/analysis?snapshot={SAMPLE_SHA256}")
    assert response.status_code == 404 and response.json()["field"] == "snapshot"


def make_repo(path, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "catalog"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_a_git_catalog_is_cloned_on_the_worker_and_polled(acme, tmp_path, settings,
                                                          django_capture_on_commit_callbacks):
    settings.SWARM_CATALOG_GIT_ALLOW_FILE = True
    settings.CELERY_TASK_ALWAYS_EAGER = True
    commit = make_repo(tmp_path / "repo", sample_files())
    with django_capture_on_commit_callbacks(execute=True):
        response = acme.post("/api/v1/catalogs", {"git_url": f"file://{tmp_path / 'repo'}", "ref": "main"},
                             format="json")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert response["Location"] == response.json()["url"]
    fetch = acme.get(response.json()["url"]).json()
    assert fetch["state"] == "succeeded", fetch
    assert fetch["snapshot"]["sha256"] == SAMPLE_SHA256 and fetch["commit_sha"] == commit
    assert fetch["snapshot"]["source"] == "git" and commit in fetch["snapshot"]["origin"]
    with django_capture_on_commit_callbacks(execute=True):
        missing_ref = acme.post("/api/v1/catalogs", {"git_url": f"file://{tmp_path / 'repo'}", "ref": "nope"},
                                format="json")
    failed = acme.get(missing_ref.json()["url"]).json()
    assert failed["state"] == "failed" and failed["error_code"] == "git_failed" and "nope" in failed["error_detail"]


def test_a_git_url_the_worker_may_not_fetch_is_refused_before_anything_is_queued(acme):
    for body, field in (({"git_url": "file:///etc", "ref": "main"}, "git_url"),
                        ({"git_url": "ftp://example.com/x.git"}, "git_url"),
                        ({"git_url": "https://example.com/x.git", "ref": "--upload-pack=evil"}, "ref")):
        response = acme.post("/api/v1/catalogs", body, format="json")
        assert response.status_code == 400 and response.json()["field"] == field, response.json()
    assert not CatalogFetch.objects.exists()


# --- analysis -----------------------------------------------------------------------------------


def test_the_analysis_has_the_dag_requirements_and_fitness_narrowed_to_a_tier(acme, sample_snapshot):
    response = acme.get(f"/api/v1/scenarios/picker-wheel/analysis?snapshot={SAMPLE_SHA256}&tier=tier-2-desktop")
    assert response.status_code == 200, response.json()
    analysis = response.json()
    assert analysis["root"] == "scenario:picker-wheel" and analysis["tier"] == "desktop"
    assert {"resource:postgres", "scenario:notification-hub"} <= {node["key"] for node in analysis["nodes"]}
    assert analysis["requirements"]["required"]["ram_mb"] == 960
    assert list(analysis["fitness"]) == ["desktop"] and analysis["fitness"]["desktop"]["deployable"] is False
    swapped = acme.get(f"/api/v1/scenarios/picker-wheel/analysis?snapshot={SAMPLE_SHA256}&tier=desktop"
                       "&swap=postgres=sqlite").json()
    assert swapped["swaps"] == {"postgres": "sqlite"} and swapped["fitness"]["desktop"]["deployable"] is True


def test_analysis_bad_input_names_what_is_wrong(acme, sample_snapshot):
    base = f"/api/v1/scenarios/picker-wheel/analysis?snapshot={SAMPLE_SHA256}"
    tier = acme.get(base + "&tier=moon")
    assert tier.status_code == 400 and tier.json()["error"] == "unknown_tier" and "desktop" in tier.json()["detail"]
    swap = acme.get(base + "&swap=postgres=oracle")
    assert swap.status_code == 400 and swap.json()["error"] == "unknown_swap_target"
    unknown = acme.get(f"/api/v1/scenarios/nope/analysis?snapshot={SAMPLE_SHA256}")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_scenario"
    no_snapshot = acme.get("/api/v1/scenarios/picker-wheel/analysis")
    assert no_snapshot.status_code == 400 and no_snapshot.json()["field"] == "snapshot"


def test_a_cycle_is_a_422_naming_its_members_in_order_and_missing_and_unsatisfied_are_reported(acme):
    files = catalog(scenario_file("a", scenarios={"b": {}}), scenario_file("b", scenarios={"c": {}}),
                    scenario_file("c", scenarios={"a": {}}), scenario_file("top", scenarios={"a": {}}),
                    scenario_file("app", resources={"ghost": {}}, scenarios={"lib": {"versionRange": "^2.0.0"}}),
                    scenario_file("lib", version="1.5.0"))
    snapshot = upload(acme, tarball(files)).json()["snapshot"]["sha256"]
    cycle = acme.get(f"/api/v1/scenarios/top/analysis?snapshot={snapshot}")
    assert cycle.status_code == 422 and cycle.json()["error"] == "dependency_cycle"
    assert cycle.json()["cycle"] == ["scenario:a", "scenario:b", "scenario:c", "scenario:a"]
    app = acme.get(f"/api/v1/scenarios/app/analysis?snapshot={snapshot}").json()
    assert [item["key"] for item in app["missing"]] == ["resource:ghost"]
    assert [(p["to"], p["status"]) for p in app["version_problems"]] == [("scenario:lib", "unsatisfied")]


# --- profiles -----------------------------------------------------------------------------------


def test_a_profile_is_versioned_by_every_change_and_diffable(acme, sample_snapshot):
    created = create_profile(acme, SAMPLE_SHA256)
    assert created.status_code == 201, created.json()
    profile = created.json()
    assert profile["tenant"] == "acme" and profile["current_version"]["number"] == 1
    assert profile["current_version"]["tier"] == "desktop"
    base = profile["url"]
    swap = acme.post(f"{base}/swap", {"original": "postgres", "replacement": "sqlite"}, format="json")
    assert swap.status_code == 201 and swap.json()["version"]["number"] == 2
    assert swap.json()["changes"] == [{"pointer": "/swaps/postgres", "op": "add", "old": None, "new": "sqlite"}]
    same = acme.post(f"{base}/swap", {"original": "postgres", "replacement": "sqlite"}, format="json")
    assert same.status_code == 200 and same.json()["created"] is False
    changed = acme.post(f"{base}/set", {"settings": {"platforms": ["linux-x64"]}, "note": "linux only"}, format="json")
    assert changed.status_code == 201 and changed.json()["version"]["number"] == 3
    decided = acme.post(f"{base}/set", {"secret_decisions": {"PICKER_SESSION_KEY": {"class": "user_prompt"}}},
                        format="json")
    assert decided.status_code == 201 and decided.json()["version"]["secrets"] == {
        "PICKER_SESSION_KEY": {"class": "user_prompt"}}
    versions = acme.get(f"{base}/versions").json()
    assert [version["number"] for version in versions["results"]] == [4, 3, 2, 1]
    diff = acme.get(f"{base}/diff?from=1&to=3").json()
    assert (diff["from"], diff["to"], diff["note"]) == (1, 3, "linux only")
    assert {change["pointer"] for change in diff["changes"]} == {"/swaps/postgres", "/settings/platforms"}
    assert acme.get(f"{base}/diff").json()["from"] == 3
    assert ProfileVersion.objects.filter(profile_id=profile["id"]).count() == 4


def test_profile_bad_input_names_the_field_and_changes_nothing(acme, sample_snapshot):
    tier = create_profile(acme, SAMPLE_SHA256, tier="moon")
    assert tier.status_code == 400 and tier.json()["error"] == "unknown_tier"
    swap = create_profile(acme, SAMPLE_SHA256, swaps={"postgres": "oracle"})
    assert swap.status_code == 400 and swap.json()["error"] == "unknown_swap_target" and "oracle" in swap.json()["detail"]
    scenario = create_profile(acme, SAMPLE_SHA256, scenario="nope")
    assert scenario.status_code == 404 and scenario.json()["field"] == "/scenario"
    assert not DeploymentProfile.objects.exists()
    profile = create_profile(acme, SAMPLE_SHA256).json()
    bad_swap = acme.post(f"{profile['url']}/swap", {"original": "postgres", "replacement": "oracle"}, format="json")
    assert bad_swap.status_code == 400 and bad_swap.json()["error"] == "unknown_swap_target"
    value = acme.post(f"{profile['url']}/set", {"secret_decisions": {"X": {"class": "user_prompt", "value": "hunter2"}}},
                      format="json")
    assert value.status_code == 400 and value.json()["error"] == "invalid_profile"
    empty = acme.post(f"{profile['url']}/set", {}, format="json")
    assert empty.status_code == 400 and empty.json()["error"] == "missing_field"
    taken = create_profile(acme, SAMPLE_SHA256)
    assert taken.status_code == 409 and taken.json()["error"] == "profile_exists"
    assert ProfileVersion.objects.count() == 1


def test_an_unbound_token_names_the_tenant_and_the_tenant_then_sees_the_snapshot(tenant, sample_snapshot):
    admin = token_client("admin")
    missing = create_profile(admin, SAMPLE_SHA256)
    assert missing.status_code == 400 and missing.json()["field"] == "tenant"
    assert create_profile(admin, SAMPLE_SHA256, tenant="acme").status_code == 201


def test_another_tenants_profile_is_a_404_everywhere(acme, globex, sample_snapshot):
    profile = create_profile(acme, SAMPLE_SHA256).json()
    base = profile["url"]
    for method, path, body in (("get", base, None), ("get", f"{base}/versions", None), ("get", f"{base}/diff", None),
                               ("get", f"{base}/secrets-plan", None), ("post", f"{base}/manifest", None),
                               ("post", f"{base}/swap", {"original": "postgres", "replacement": "sqlite"}),
                               ("post", f"{base}/set", {"tier": "server"})):
        response = getattr(globex, method)(path, body, format="json") if body else getattr(globex, method)(path)
        assert response.status_code == 404 and response.json()["error"] == "not_found", (path, response.json())
    assert globex.get("/api/v1/profiles").json()["count"] == 0
    naming = create_profile(globex, SAMPLE_SHA256, tenant="acme")
    assert naming.status_code == 404
    assert ProfileVersion.objects.count() == 1


def test_the_secrets_plan_and_a_manifest_that_refuses_an_infrastructure_secret(acme, sample_snapshot):
    profile = create_profile(acme, SAMPLE_SHA256, slug="wheel-server", tier="server").json()
    plan = acme.get(f"{profile['url']}/secrets-plan").json()
    assert plan["tier"] == "server" and plan["bundle_safe"] is False
    assert [item["id"] for item in plan["infrastructure"]] == ["POSTGRES_PASSWORD"]
    assert acme.get(f"{profile['url']}/secrets-plan?tier=desktop").json()["tier"] == "desktop"
    assert acme.get(f"{profile['url']}/secrets-plan?tier=moon").status_code == 400
    refused = acme.post(f"{profile['url']}/manifest")
    assert refused.status_code == 422 and refused.json()["error"] == "infrastructure_secret"
    [secret] = refused.json()["secrets"]
    assert secret["id"] == "POSTGRES_PASSWORD" and "postgres → sqlite" in refused.json()["detail"]


def test_the_manifest_is_assembled_from_the_current_version_and_exports_the_same_bytes(acme, sample_snapshot):
    profile = create_profile(acme, SAMPLE_SHA256).json()
    undeployable = acme.post(f"{profile['url']}/manifest")
    assert undeployable.status_code == 422 and undeployable.json()["error"] == "not_deployable"
    acme.post(f"{profile['url']}/swap", {"original": "postgres", "replacement": "sqlite"}, format="json")
    first, second = acme.post(f"{profile['url']}/manifest").json(), acme.post(f"{profile['url']}/manifest").json()
    assert first["version"] == 2 and first["canonical"] == second["canonical"]
    assert hashlib.sha256(first["canonical"].encode()).hexdigest() == first["sha256"]
    assert first["size_bytes"] == len(first["canonical"])
    assert json.loads(first["canonical"]) == first["manifest"]
    assert first["manifest"]["swaps"][0]["original"] == "postgres"
    body = acme.post(f"{profile['url']}/manifest", {"version": 1}, format="json")
    assert body.status_code == 400 and body.json()["error"] == "unknown_field"


def test_the_schema_is_served_and_validation_answers_every_error_with_its_pointer(acme, sample_snapshot):
    assert acme.get("/api/v1/schemas/bundle-manifest-v0.1.json").json() == manifest_schema()
    reader = token_client("read")
    broken = reader.post("/api/v1/manifests/validate", {"manifest": {"schema_version": "v9", "services": [{}]}},
                         format="json").json()
    assert broken["valid"] is False and broken["sha256"] is None
    assert {"/schema_version", "/services/0"} <= {error["pointer"] for error in broken["errors"]}
    profile = create_profile(acme, SAMPLE_SHA256, swaps={"postgres": "sqlite"}).json()
    manifest = acme.post(f"{profile['url']}/manifest").json()
    valid = reader.post("/api/v1/manifests/validate", {"manifest": manifest["manifest"]}, format="json").json()
    assert valid == {"valid": True, "errors": [], "sha256": manifest["sha256"]}

