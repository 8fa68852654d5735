"""Catalog imports, the analysis cache, and versioned profiles — against the real database and Redis."""
from __future__ import annotations

import io
import json

import pytest
from django.db import IntegrityError, connection, transaction

from deployments import selectors, services
from deployments.errors import (
    CatalogRefused,
    DependencyCycle,
    InvalidProfile,
    InvalidSwap,
    UnknownScenario,
    UnknownTier,
)
from deployments.models import CatalogEntry, CatalogImport, CatalogSnapshot, DeploymentProfile, ProfileVersion
from deployments.tests.conftest import SAMPLE_CATALOG, sample_files, scenario_file, tarball
from swarm.core.errors import NotFound
from swarm.core.models import AuditLogEntry
from swarm.core.principals import Principal
from swarm.core.sql_files import sql_file

pytestmark = pytest.mark.django_db(transaction=False)


@pytest.fixture
def snapshot(db, tenant):
    return services.catalog_import_directory(path=SAMPLE_CATALOG, actor="test", tenant=tenant).snapshot


@pytest.fixture
def profile_v1(snapshot, tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return services.profile_create(tenant=tenant, slug="wheel", snapshot=snapshot, scenario="picker-wheel",
                                       tier="tier-2-desktop", actor="alice")


def tenant_principal(tenant) -> Principal:
    return Principal(scope="engine", tenant_id=tenant.pk, label="engine:test")


# --- catalog imports ------------------------------------------------------------------------------------


def test_an_import_stores_a_snapshot_and_its_entries(tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = services.catalog_import_directory(path=SAMPLE_CATALOG, actor="alice", tenant=tenant)
    snapshot = result.snapshot
    assert result.created and result.problems == []
    assert (snapshot.scenario_count, snapshot.resource_count, snapshot.invalid_count) == (2, 6, 0)
    assert snapshot.entries.count() == 8
    assert snapshot.entries.get(key="resource:postgres").document["runs_as"] == "service"
    assert CatalogImport.objects.filter(snapshot=snapshot, tenant=tenant).count() == 1
    assert AuditLogEntry.objects.filter(action="catalog.import", object_id=str(snapshot.pk)).exists()


def test_reimporting_the_same_tree_is_a_no_op_that_parses_nothing(tenant, monkeypatch):
    first = services.catalog_import_directory(path=SAMPLE_CATALOG, actor="alice", tenant=tenant).snapshot
    monkeypatch.setattr(services, "parse_tree", lambda tree: pytest.fail("a re-import must not parse"))
    archive = tarball(sample_files(), prefix="vrooli-0123abc", mtime=1234567890, reverse=True)
    again = services.catalog_import_tarball(fileobj=io.BytesIO(archive), actor="bob", tenant=tenant)
    assert again.snapshot == first and again.created is False
    assert CatalogSnapshot.objects.count() == 1 and CatalogEntry.objects.count() == 8
    assert CatalogImport.objects.count() == 1


def test_a_broken_file_imports_as_an_invalid_entry_with_its_problems(tenant):
    files = {**sample_files(), "scenarios/broken/.vrooli/service.json": b"{not json"}
    result = services.catalog_import_tarball(fileobj=io.BytesIO(tarball(files)), actor="alice", tenant=tenant)
    assert result.created and [p["path"] for p in result.problems] == ["scenarios/broken/.vrooli/service.json"]
    snapshot = result.snapshot
    assert snapshot.invalid_count == 1 and snapshot.problems == result.problems
    broken = snapshot.entries.get(key="scenario:broken")
    assert broken.valid is False and broken.document["problems"][0]["code"] == "parse_error"
    with pytest.raises(UnknownScenario):
        services.profile_create(tenant=tenant, slug="broken", snapshot=snapshot, scenario="broken", tier="local",
                                actor="alice")


def test_a_strict_import_refuses_a_tree_with_problems_and_keeps_nothing(tenant):
    files = {**sample_files(), "scenarios/broken/.vrooli/service.json": b"{not json"}
    with pytest.raises(CatalogRefused) as refused:
        services.catalog_import_tarball(fileobj=io.BytesIO(tarball(files)), actor="a", tenant=tenant, strict=True)
    assert refused.value.code == "catalog_problems"
    assert refused.value.extra["problems"][0]["path"] == "scenarios/broken/.vrooli/service.json"
    assert not CatalogSnapshot.objects.exists() and not CatalogEntry.objects.exists()


def test_a_tree_with_nothing_valid_and_a_hostile_archive_keep_nothing(tenant):
    with pytest.raises(CatalogRefused) as refused:
        services.catalog_import_tarball(fileobj=io.BytesIO(tarball({"scenarios/x/.vrooli/service.json": b"[]"})),
                                        actor="a", tenant=tenant)
    assert refused.value.code == "catalog_invalid"
    import tarfile

    escape = tarfile.TarInfo("../escape")
    escape.size = 1
    with pytest.raises(CatalogRefused) as refused:
        services.catalog_import_tarball(fileobj=io.BytesIO(tarball(sample_files(), members=[escape])), actor="a")
    assert refused.value.code == "path_traversal"
    assert not CatalogSnapshot.objects.exists()


def test_snapshots_are_visible_to_the_tenants_that_imported_or_use_them(snapshot, tenant, other_tenant):
    assert list(CatalogSnapshot.objects.visible_to(tenant_principal(tenant))) == [snapshot]
    assert list(CatalogSnapshot.objects.visible_to(tenant_principal(other_tenant))) == []
    with pytest.raises(NotFound):
        selectors.snapshot_get(sha256=snapshot.sha256, principal=tenant_principal(other_tenant))


# --- the analysis cache ------------------------------------------------------------------------------


def test_a_cached_analysis_costs_no_query_and_no_parsing(snapshot, monkeypatch, django_assert_num_queries):
    cold = selectors.scenario_analysis(snapshot=snapshot, scenario="picker-wheel", swaps={"postgres": "sqlite"})
    monkeypatch.setattr(selectors, "analyze", lambda *args, **kwargs: pytest.fail("a cache hit must not analyse"))
    with django_assert_num_queries(0):
        warm = selectors.scenario_analysis(snapshot=snapshot, scenario="picker-wheel", swaps={"postgres": "sqlite"})
    assert warm == cold
    with pytest.raises(pytest.fail.Exception):  # other swaps are another key: a miss
        selectors.scenario_analysis(snapshot=snapshot, scenario="picker-wheel", swaps={})


def test_a_cold_analysis_reads_the_closure_a_level_at_a_time(snapshot):
    from deployments.lookup import SnapshotLookup

    lookup = SnapshotLookup(snapshot)
    selectors.scenario_analysis(snapshot=snapshot, scenario="picker-wheel", lookup=lookup)
    assert lookup.queries <= 5  # root, its dependencies, theirs, and the swap candidates — not one per entry


def test_a_refusal_is_cached_and_raised_again(tenant, monkeypatch):
    files = dict([scenario_file("a", scenarios={"b": {}}), scenario_file("b", scenarios={"a": {}})])
    snapshot = services.catalog_import_tarball(fileobj=io.BytesIO(tarball(files)), actor="a").snapshot
    with pytest.raises(DependencyCycle):
        selectors.scenario_analysis(snapshot=snapshot, scenario="a")
    monkeypatch.setattr(selectors, "analyze", lambda *args, **kwargs: pytest.fail("cached"))
    with pytest.raises(DependencyCycle) as again:
        selectors.scenario_analysis(snapshot=snapshot, scenario="a")
    assert again.value.extra["cycle"] == ["scenario:a", "scenario:b", "scenario:a"]


# --- profiles -----------------------------------------------------------------------------------------------


def test_a_new_profile_has_version_one(profile_v1, tenant):
    profile = profile_v1.profile
    assert profile_v1.number == 1 and profile_v1.tier == "desktop"  # tier-2-desktop, stored canonical
    assert profile.current_version == profile_v1 and profile.tenant == tenant
    assert (profile_v1.created_by, profile_v1.note) == ("alice", "created")
    assert AuditLogEntry.objects.filter(action="profile.create", object_id=str(profile.pk)).exists()


def test_every_change_is_a_new_immutable_version_and_no_change_writes_nothing(profile_v1):
    profile = profile_v1.profile
    second = services.profile_swap(profile=profile, original="postgres", replacement="sqlite", actor="bob")
    assert second.created and second.version.number == 2 and second.version.swaps == {"postgres": "sqlite"}
    assert second.changes == [{"pointer": "/swaps/postgres", "op": "add", "old": None, "new": "sqlite"}]
    same = services.profile_swap(profile=profile, original="postgres", replacement="sqlite", actor="bob")
    assert same.created is False and same.version == second.version
    third = services.profile_update(profile=profile, actor="carol", tier="server",
                                    settings={"platforms": ["linux-x64"]}, note="ship to the office server")
    assert third.version.number == 3
    profile.refresh_from_db()
    assert profile.current_version == third.version
    assert list(selectors.profile_versions(profile=profile).values_list("number", flat=True)) == [3, 2, 1]
    # Earlier versions are as they were.
    assert ProfileVersion.objects.get(pk=profile_v1.pk).content() == profile_v1.content()


def test_a_diff_between_any_two_versions_says_what_who_and_when(profile_v1, django_capture_on_commit_callbacks):
    profile = profile_v1.profile
    with django_capture_on_commit_callbacks(execute=True):
        services.profile_swap(profile=profile, original="postgres", replacement="sqlite", actor="bob")
        services.profile_update(profile=profile, actor="carol", tier="server", note="office server")
    oldest = selectors.profile_version_get(profile=profile, number=1)
    newest = selectors.profile_version_get(profile=profile)
    result = selectors.profile_version_diff(older=oldest, newer=newest)
    assert (result["from"], result["to"], result["created_by"], result["note"]) == (1, 3, "carol", "office server")
    assert result["changes"] == [{"pointer": "/swaps/postgres", "op": "add", "old": None, "new": "sqlite"},
                                 {"pointer": "/tier", "op": "replace", "old": "desktop", "new": "server"}]
    assert result["created_at"] == newest.created_at.isoformat()
    audit = AuditLogEntry.objects.filter(action="profile.change", object_id=str(profile.pk)).order_by("at")
    assert [entry.detail["version"] for entry in audit] == [2, 3]


def test_the_database_refuses_to_rewrite_a_version(profile_v1):
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        ProfileVersion.objects.filter(pk=profile_v1.pk).update(tier="server")
    profile_v1.swaps = {"postgres": "sqlite"}
    with pytest.raises(IntegrityError), transaction.atomic():
        profile_v1.save()


def test_the_trigger_function_in_the_database_is_the_file(db):
    file = sql_file("deployments/sql/swarm_profile_version_immutable.sql")
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", [file.function])
        [(source,)] = cursor.fetchall()
    assert source.strip() == file.text.split("$$")[1].strip()


@pytest.mark.parametrize(("fields", "error", "field"), [
    ({"tier": "cloud"}, UnknownTier, "tier"),
    ({"scenario": "no-such"}, UnknownScenario, "/scenario"),
    ({"swaps": {"postgres": "mariadb"}}, InvalidSwap, "swaps/postgres"),
    ({"swaps": {"mysql": "sqlite"}}, InvalidSwap, "swaps/mysql"),
    ({"secrets": {"POSTGRES_PASSWORD": {"class": "per_install_generated", "value": "hunter2"}}}, InvalidProfile,
     "/secrets/POSTGRES_PASSWORD/value"),
    ({"secrets": {"X": {"class": "infrastructure"}}}, InvalidProfile, "/secrets/X/class"),
    ({"secrets": {"X": {"class": "remote_fetch"}}}, InvalidProfile, "/secrets/X"),
    ({"settings": {"platforms": ["amiga-68k"]}}, InvalidProfile, "/settings/platforms/0"),
    ({"settings": {"colour": "blue"}}, InvalidProfile, "/settings"),
])
def test_a_bad_profile_is_refused_and_nothing_is_written(snapshot, tenant, fields, error, field):
    arguments = {"tenant": tenant, "slug": "bad", "snapshot": snapshot, "scenario": "picker-wheel", "tier": "desktop",
                 "actor": "alice", **fields}
    with pytest.raises(error) as refused:
        services.profile_create(**arguments)
    assert refused.value.field == field
    assert not DeploymentProfile.objects.filter(slug="bad").exists()


def test_a_bad_change_leaves_the_current_version(profile_v1):
    with pytest.raises(InvalidSwap):
        services.profile_swap(profile=profile_v1.profile, original="postgres", replacement="nothing", actor="x")
    assert ProfileVersion.objects.filter(profile=profile_v1.profile).count() == 1


def test_a_taken_slug_is_a_conflict(profile_v1, snapshot, tenant):
    with pytest.raises(InvalidProfile) as refused:
        services.profile_create(tenant=tenant, slug="wheel", snapshot=snapshot, scenario="picker-wheel",
                                tier="local", actor="x")
    assert (refused.value.code, refused.value.status_code) == ("profile_exists", 409)


def test_another_tenants_profile_is_not_found(profile_v1, other_tenant, tenant):
    assert selectors.profile_get(principal=tenant_principal(tenant), profile_id=profile_v1.profile.pk)
    with pytest.raises(NotFound):
        selectors.profile_get(principal=tenant_principal(other_tenant), profile_id=profile_v1.profile.pk)
    assert list(selectors.profile_list(principal=tenant_principal(other_tenant))) == []


def test_decided_secrets_and_the_manifest_follow_the_current_version(profile_v1):
    profile = profile_v1.profile
    plan = selectors.profile_secrets_plan(version=selectors.profile_version_get(profile=profile), tier="server")
    assert [item["id"] for item in plan["infrastructure"]] == ["POSTGRES_PASSWORD"]
    services.profile_swap(profile=profile, original="postgres", replacement="sqlite", actor="bob")
    services.profile_decide_secret(profile=profile, secret_id="OPENROUTER_API_KEY", actor="bob",
                                   decision={"class": "remote_fetch", "remote": {"source": "vault://kv/openrouter"}})
    current = selectors.profile_version_get(profile=DeploymentProfile.objects.get(pk=profile.pk))
    assert current.number == 3
    manifest = selectors.profile_manifest(version=current)
    assert manifest.document["source"]["profile_version"] == 3
    assert manifest.document["swaps"][0]["replacement"] == "sqlite"
    secrets = {secret["id"]: secret for secret in manifest.document["secrets"]}
    assert secrets["OPENROUTER_API_KEY"]["class"] == "remote_fetch"
    again = selectors.profile_manifest(version=ProfileVersion.objects.get(pk=current.pk))
    assert again.canonical == manifest.canonical
    assert json.loads(manifest.canonical)["source"]["catalog_snapshot"] == current.snapshot.sha256
