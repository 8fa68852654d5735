"""Reading and parsing catalog trees: both Vrooli formats, the tree hash, per-file problems, hostile input."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest

from deployments.catalog import CatalogLimits, parse_tree, read_directory, read_tarball, tree_from_files
from deployments.errors import CatalogRefused
from deployments.tests.conftest import SAMPLE_CATALOG, resource_file, sample_files, scenario_file, tarball

pytestmark = pytest.mark.django_db  # the strict JSON loader reads its depth limit from the settings


def problems_of(files: dict[str, bytes], **limits):
    entries, problems = parse_tree(tree_from_files(files, limits=CatalogLimits(**limits) if limits else None))
    return entries, problems


def test_the_sample_catalog_parses_without_problems():
    tree = read_directory(SAMPLE_CATALOG)
    entries, problems = parse_tree(tree)
    assert problems == []
    assert sorted(entries) == [
        "resource:ollama", "resource:openrouter", "resource:postgres", "resource:qdrant", "resource:redis",
        "resource:sqlite", "scenario:notification-hub", "scenario:picker-wheel"]
    assert all(document["valid"] for document in entries.values())
    assert entries["resource:qdrant"]["format"] == "service.json"  # the legacy resources/<name>/.vrooli layout
    assert entries["resource:postgres"]["format"] == "resource.json"


def test_a_scenario_service_json_is_read_as_vrooli_writes_it():
    entries, _ = parse_tree(read_directory(SAMPLE_CATALOG))
    wheel = entries["scenario:picker-wheel"]
    assert wheel["version"] == "1.2.0"
    assert {(d["kind"], d["name"], d["required"], d["enabled"]) for d in wheel["dependencies"]} == {
        ("resource", "postgres", True, True), ("resource", "ollama", False, True), ("resource", "redis", False, False),
        ("scenario", "notification-hub", True, True)}
    hub = next(d for d in wheel["dependencies"] if d["name"] == "notification-hub")
    assert hub["version_range"] == "^1.0.0"
    desktop = wheel["declared_support"]["resource:postgres"]["desktop"]  # from tier_feasibility, tier-2-desktop
    assert desktop == {"supported": False, "score": 0.2, "alternatives": ["sqlite"],
                       "reason": "Needs a PostgreSQL server; a desktop install has none"}
    assert wheel["declared_swaps"]["resource:postgres"][0]["id"] == "sqlite"
    assert wheel["own_support"]["mobile"]["supported"] is False  # deployment.tiers tier-3-mobile: blocked
    assert wheel["own_support"]["server"]["score"] == 0.95
    assert [c["id"] for c in wheel["components"]] == ["api", "ui"]
    assert wheel["components"][0]["build"] == {"type": "go", "source_dir": "scenarios/picker-wheel/api"}
    assert wheel["health"][0]["port_name"] == "api" and wheel["health"][0]["path"] == "/health"


def test_a_resource_json_is_read_as_vrooli_writes_it():
    entries, _ = parse_tree(read_directory(SAMPLE_CATALOG))
    postgres = entries["resource:postgres"]
    assert postgres["runs_as"] == "service"  # driver docker-service
    assert postgres["own_support"]["desktop"]["score"] == 0.75  # conditional on linux, macos, windows
    secret = postgres["secrets"][0]
    assert (secret["id"], secret["declared_class"], secret["pointer"]) == (
        "POSTGRES_PASSWORD", "infrastructure", "/runtime/env/POSTGRES_PASSWORD")
    assert secret["derived"] == ["DATABASE_URL", "POSTGRES_URL"]
    assert postgres["env"] == {"POSTGRES_DB": "vrooli", "POSTGRES_USER": "vrooli"}
    openrouter = entries["resource:openrouter"]
    assert openrouter["runs_as"] == "remote"
    key = openrouter["secrets"][0]
    assert (key["id"], key["declared_class"], key["label"]) == ("OPENROUTER_API_KEY", "user_prompt",
                                                                "OpenRouter API Key")
    assert key["validation"] == "^sk-or-[A-Za-z0-9-]{16,}$"
    assert entries["resource:redis"]["requirements"] == {"ram_mb": 512, "disk_mb": 1024, "cpu_cores": 1,
                                                         "gpu": False, "gpu_vram_mb": 0}


def test_secret_values_are_never_kept():
    entries, _ = parse_tree(read_directory(SAMPLE_CATALOG))
    stored = json.dumps(entries)
    assert "dev-only-webhook-secret" not in stored  # notification-hub's environment HUB_WEBHOOK_SECRET
    hub = entries["scenario:notification-hub"]
    assert "HUB_WEBHOOK_SECRET" not in hub["env"] and hub["env"]["HUB_LOG_LEVEL"] == "info"
    assert hub["secrets"][0]["id"] == "HUB_WEBHOOK_SECRET"
    assert "POSTGRES_PASSWORD" not in entries["resource:postgres"]["env"]


def test_the_tree_hash_ignores_archive_order_timestamps_and_a_top_folder():
    files = sample_files()
    from_directory = read_directory(SAMPLE_CATALOG).sha256
    plain = read_tarball(io.BytesIO(tarball(files))).sha256
    wrapped = read_tarball(io.BytesIO(tarball(files, prefix="vrooli-main", mtime=1_700_000_000, reverse=True))).sha256
    in_memory = tree_from_files({**files, "README.md": b"# not part of the catalog"}).sha256
    assert from_directory == plain == wrapped == in_memory
    changed = dict(files)
    changed["resources/sqlite/resource.json"] = files["resources/sqlite/resource.json"].replace(b"16", b"17")
    assert tree_from_files(changed).sha256 != from_directory


def test_other_files_are_ignored_and_counted():
    tree = read_tarball(io.BytesIO(tarball({**sample_files(), "scenarios/picker-wheel/api/main.go": b"package main",
                                            "docs/x.md": b"x"})))
    assert len(tree.files) == 8 and tree.ignored_files == 2


def test_a_tree_without_catalog_files_is_refused():
    with pytest.raises(CatalogRefused) as refused:
        tree_from_files({"README.md": b"hello"})
    assert refused.value.code == "empty_catalog"


def test_malformed_json_is_a_problem_of_that_file_and_the_rest_still_parses():
    files = {**sample_files(), "scenarios/broken/.vrooli/service.json": b'{"service": {"name": "broken",}'}
    entries, problems = problems_of(files)
    [problem] = problems
    assert problem.path == "scenarios/broken/.vrooli/service.json"
    assert problem.code == "parse_error" and "not valid JSON" in problem.message
    assert entries["scenario:broken"]["valid"] is False
    assert entries["scenario:broken"]["problems"][0]["code"] == "parse_error"
    assert entries["scenario:picker-wheel"]["valid"] is True


@pytest.mark.parametrize(("document", "pointer"), [
    ({"dependencies": {"resources": ["postgres"]}}, "/dependencies/resources"),
    ({"dependencies": {"resources": {"postgres": {"required": "yes"}}}}, "/dependencies/resources/postgres/required"),
    ({"dependencies": {"scenarios": {"Bad Name": {}}}}, "/dependencies/scenarios"),
    ({"requirements": {"ram_mb": -1}}, "/requirements/ram_mb"),
    ({"tier_feasibility": {"dependencies": {"resources": {"postgres": {"platform_support": {
        "tier-2-desktop": {"fitness_score": 2}}}}}}},
     "/tier_feasibility/dependencies/resources/postgres/platform_support/tier-2-desktop/fitness_score"),
    ({"ports": {"api": {"range": "high"}}}, "/ports/api/range"),
    ({"secrets": [{"id": "X", "class": "secret-ish"}]}, "/secrets/0/class"),
    ({"secrets": [{"id": "X", "class": "per_install_generated",
                   "generator": {"type": "random", "length": 2, "charset": "alnum"}}]}, "/secrets/0/generator/length"),
    ({"secrets": [{"id": "X", "class": "remote_fetch"}]}, "/secrets/0"),
])
def test_a_wrong_shape_is_reported_with_its_json_pointer(document, pointer):
    files = {"scenarios/odd/.vrooli/service.json": json.dumps({"service": {"name": "odd"}, **document}).encode(),
             **dict([scenario_file("fine")])}
    entries, problems = problems_of(files)
    assert [problem.pointer for problem in problems] == [pointer]
    assert problems[0].code == "wrong_shape" and problems[0].severity == "error"
    assert entries["scenario:odd"]["valid"] is False and entries["scenario:fine"]["valid"] is True


def test_a_resource_json_with_a_wrong_shape():
    entries, problems = problems_of(dict([resource_file("pg", dependencies="postgres")]))
    assert [(p.path, p.pointer) for p in problems] == [("resources/pg/resource.json", "/dependencies")]


def test_a_document_that_is_not_an_object():
    _, problems = problems_of({"scenarios/list/.vrooli/service.json": b"[1, 2, 3]"})
    assert problems[0].code == "not_an_object"


def test_a_50_mb_service_json_is_refused_without_being_read(tmp_path):
    big = b'{"service": {"name": "big"}, "padding": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    entries, problems = problems_of({"scenarios/big/.vrooli/service.json": big, **dict([scenario_file("ok")])})
    assert problems[0].code == "too_large" and "at most 1048576" in problems[0].message
    assert entries["scenario:big"]["valid"] is False and entries["scenario:ok"]["valid"] is True
    # The same from a tarball, streamed: the member is hashed, never held in memory.
    tree = read_tarball(io.BytesIO(tarball({"scenarios/big/.vrooli/service.json": big})))
    assert tree.files[0].data is None and tree.files[0].size == len(big)
    assert tree.files[0].refusal.code == "too_large"
    # And from a directory.
    target = tmp_path / "scenarios" / "big" / ".vrooli"
    target.mkdir(parents=True)
    (target / "service.json").write_bytes(big)
    assert read_directory(tmp_path).files[0].refusal.code == "too_large"


def test_10000_levels_of_nesting_are_refused_not_a_recursion_error():
    deep = b'{"service": {"name": "deep"}, "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    entries, problems = problems_of({"scenarios/deep/.vrooli/service.json": deep})
    assert problems[0].code == "too_deep"
    assert entries["scenario:deep"]["valid"] is False


def test_text_no_database_can_store_is_a_problem_with_its_pointer():
    nul = json.dumps({"service": {"name": "nul", "description": "a\u0000b"}}).encode()
    _, problems = problems_of({"scenarios/nul/.vrooli/service.json": nul})
    assert (problems[0].code, problems[0].pointer) == ("invalid_text", "/service/description")


def test_bytes_that_are_not_utf8():
    _, problems = problems_of({"scenarios/latin/.vrooli/service.json": b'{"x": "\xe9"}'})
    assert problems[0].code == "parse_error"


def test_warnings_do_not_make_an_entry_invalid():
    files = dict([scenario_file("real-name", tier_feasibility={"dependencies": {"resources": {"pg": {
        "platform_support": {"tier-9-moon": {"supported": True}}}}}})])
    files["scenarios/dir-name/.vrooli/service.json"] = files.pop("scenarios/real-name/.vrooli/service.json")
    entries, problems = problems_of(files)
    assert {(p.code, p.severity) for p in problems} == {("name_mismatch", "warning"), ("unknown_tier", "warning")}
    assert entries["scenario:dir-name"]["valid"] is True


def test_both_resource_formats_for_one_resource_the_newer_wins():
    files = {"resources/db/resource.json": json.dumps({"name": "db", "requirements": {"ram_mb": 1}}).encode(),
             "resources/db/.vrooli/service.json": json.dumps({"service": {"name": "db"}}).encode()}
    entries, problems = problems_of(files)
    assert entries["resource:db"]["format"] == "resource.json"
    assert [(p.code, p.path) for p in problems] == [("superseded", "resources/db/.vrooli/service.json")]


def test_a_symlinked_service_json_is_never_followed(tmp_path):
    secret = tmp_path / "outside.json"
    secret.write_text('{"service": {"name": "leak"}}')
    (tmp_path / "tree" / "scenarios" / "leak" / ".vrooli").mkdir(parents=True)
    os.symlink(secret, tmp_path / "tree" / "scenarios" / "leak" / ".vrooli" / "service.json")
    tree = read_directory(tmp_path / "tree")
    assert tree.files[0].data is None and tree.files[0].refusal.code == "not_a_file"


def _member(name: str, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(("member", "code"), [
    (_member("/etc/passwd", size=1), "absolute_path"),
    (_member("scenarios/../../escape.json", size=1), "path_traversal"),
    (_member("scenarios/x/link", type=tarfile.SYMTYPE, linkname="../../../etc"), "link_escapes_root"),
    (_member("scenarios/x/hard", type=tarfile.LNKTYPE, linkname="/etc/shadow"), "link_escapes_root"),
    (_member("dev/sda", type=tarfile.BLKTYPE), "device_file"),
    (_member("pipe", type=tarfile.FIFOTYPE), "fifo"),
    (_member("scenarios/x/run.sh", size=1, mode=0o4755), "setuid_bit"),
])
def test_a_tarball_with_a_hostile_member_is_refused_whole(member, code):
    data = tarball(sample_files(), members=[member])
    with pytest.raises(CatalogRefused) as refused:
        read_tarball(io.BytesIO(data))
    assert refused.value.code == code


def test_tarball_bombs_are_refused():
    with pytest.raises(CatalogRefused) as refused:
        read_tarball(io.BytesIO(tarball(sample_files())), limits=CatalogLimits(max_members=3))
    assert refused.value.code == "too_many_members"
    with pytest.raises(CatalogRefused) as refused:
        read_tarball(io.BytesIO(tarball(sample_files())), limits=CatalogLimits(max_unpacked_bytes=1000))
    assert refused.value.code == "too_large_unpacked"


@pytest.mark.parametrize("data", [b"not a tarball", gzip.compress(b"plain gzip, no tar inside"), b""])
def test_what_is_not_a_tar_gz_is_refused(data):
    with pytest.raises(CatalogRefused) as refused:
        read_tarball(io.BytesIO(data))
    assert refused.value.code in ("not_a_tar_gz", "empty_catalog")


def test_a_health_target_that_is_not_a_url_still_parses():
    odd = resource_file("odd", health_checks=[{"type": "http", "target": "http://[::1"}])
    entries, problems = problems_of(dict([odd]))
    assert problems == [] and entries["resource:odd"]["health"][0]["port_name"] == ""
