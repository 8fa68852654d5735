"""bundle.json: assembly from a profile version's content, its refusals, the schema with pointers, canonical export."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest
from jsonschema import Draft202012Validator

from deployments.analysis import analyze
from deployments.errors import InfrastructureSecrets, ManifestInvalid, NotDeployable
from deployments.manifest import assemble_manifest, canonical_json, manifest_schema, validate_manifest
from deployments.tests.conftest import lookup_of, sample_files

pytestmark = pytest.mark.django_db

SNAPSHOT = "a" * 64


def assemble(tier="desktop", swaps=None, secrets=None, settings=None, *, lookup=None):
    lookup = lookup or lookup_of(sample_files())
    content = {"snapshot": SNAPSHOT, "scenario": "picker-wheel", "tier": tier,
               "swaps": {"postgres": "sqlite"} if swaps is None else swaps, "secrets": secrets or {},
               "settings": settings or {}}
    return assemble_manifest(content=content, lookup=lookup,
                             analysis_for=lambda wanted: analyze(lookup, "picker-wheel", wanted),
                             profile="wheel-desktop", version=3)


def services(manifest) -> dict:
    return {service["id"]: service for service in manifest.document["services"]}


def test_the_schema_file_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(manifest_schema())
    assert manifest_schema()["properties"]["schema_version"] == {"const": "v0.1"}


def test_a_manifest_from_the_swapped_desktop_profile():
    manifest = assemble()
    document = manifest.document
    assert validate_manifest(document) == []
    assert (document["schema_version"], document["target"]) == ("v0.1", "desktop")
    assert document["app"] == {"name": "picker-wheel", "version": "1.2.0",
                               "description": "Customisable spinning wheels with weighted random selection"}
    assert document["swaps"] == [{"original": "postgres", "replacement": "sqlite", "reason": "drop-in",
                                  "limitations": "Single-user file store; the schema migrates as is"}]
    assert document["source"] == {"profile": "wheel-desktop", "profile_version": 3, "catalog_snapshot": SNAPSHOT,
                                  "scenario": "picker-wheel", "tier": "desktop",
                                  "platforms": ["linux-x64", "darwin-arm64", "win-x64"]}
    # Dependencies first, as the DAG orders them; sqlite is a library and openrouter a hosted API: no process.
    assert [service["id"] for service in document["services"]] == [
        "ollama", "notification-hub-api", "picker-wheel-api", "picker-wheel-ui"]
    hub = services(manifest)["notification-hub-api"]
    assert hub["metadata"]["uses"] == [{"key": "resource:openrouter", "runs_as": "remote"},
                                      {"key": "resource:sqlite", "runs_as": "library"}]
    assert hub["secrets"] == ["HUB_WEBHOOK_SECRET", "OPENROUTER_API_KEY"]  # its own, and the hosted API's it calls
    assert hub["health"] == {"type": "http", "path": "/healthz", "port_name": "api", "interval_ms": 30000,
                             "timeout_ms": 5000, "retries": 3}


def test_services_carry_per_platform_binaries_builds_ports_secrets_and_assets():
    wheel = services(assemble())
    api, ui = wheel["picker-wheel-api"], wheel["picker-wheel-ui"]
    assert api["type"] == "api-binary" and ui["type"] == "ui-bundle"
    assert api["binaries"] == {
        "linux-x64": {"path": "bin/picker-wheel-api/linux-x64/picker-wheel-api"},
        "darwin-arm64": {"path": "bin/picker-wheel-api/darwin-arm64/picker-wheel-api"},
        "win-x64": {"path": "bin/picker-wheel-api/win-x64/picker-wheel-api.exe"}}
    assert api["build"] == {"type": "go", "source_dir": "scenarios/picker-wheel/api", "entry_point": ".",
                            "output_pattern": "bin/picker-wheel-api/{{platform}}/picker-wheel-api{{ext}}",
                            "env": {"CGO_ENABLED": "0"}}
    assert api["env"]["API_PORT"] == "${picker-wheel-api.api}"
    assert api["ports"] == {"requested": [{"name": "api", "range": {"min": 15000, "max": 19999}}]}
    assert api["dependencies"] == ["notification-hub-api", "ollama"]
    assert ui["dependencies"] == ["notification-hub-api", "ollama", "picker-wheel-api"]
    assert ui["readiness"] == {"type": "dependencies_ready", "timeout_ms": 30000}
    assert api["secrets"] == ["PICKER_SESSION_KEY"] and ui["secrets"] == ["PICKER_SESSION_KEY"]
    sounds = hashlib.sha256(b"wheel sounds\n").hexdigest()
    assert ui["assets"] == [{"path": "ui/dist/wheel-sounds.ogg", "sha256": sounds, "size_bytes": 13,
                             "url": "https://assets.example.com/picker-wheel/wheel-sounds.ogg"}]
    ollama = wheel["ollama"]
    assert ollama["type"] == "resource" and ollama["critical"] is False and ollama["metadata"]["optional"] is True


def test_the_manifests_secrets_come_from_the_plan_and_never_hold_values():
    manifest = assemble()
    secrets = {secret["id"]: secret for secret in manifest.document["secrets"]}
    assert sorted(secrets) == ["HUB_WEBHOOK_SECRET", "OPENROUTER_API_KEY", "PICKER_SESSION_KEY"]
    assert secrets["PICKER_SESSION_KEY"]["generator"] == {"type": "random", "length": 48, "charset": "alnum"}
    assert secrets["OPENROUTER_API_KEY"]["class"] == "user_prompt"
    assert "dev-only-webhook-secret" not in manifest.canonical.decode()
    assert all(secret["class"] != "infrastructure" for secret in secrets.values())


def test_settings_shape_the_manifest():
    manifest = assemble(settings={
        "platforms": ["linux-arm64"], "exclude_optional": ["ollama", "openrouter"],
        "app": {"name": "Wheel", "version": "2.0.0"}, "ipc": {"port": 48000},
        "assets": [{"service": "picker-wheel-api", "path": "data/seed.sql", "sha256": "b" * 64, "size_bytes": 10}],
        "env": {"picker-wheel-api": {"LOG_LEVEL": "debug"}}})
    document = manifest.document
    assert "ollama" not in services(manifest)
    assert sorted(secret["id"] for secret in document["secrets"]) == ["HUB_WEBHOOK_SECRET", "PICKER_SESSION_KEY"]
    assert document["app"]["name"] == "Wheel" and document["ipc"]["port"] == 48000
    api = services(manifest)["picker-wheel-api"]
    assert list(api["binaries"]) == ["linux-arm64"]
    assert api["assets"] == [{"path": "data/seed.sql", "sha256": "b" * 64, "size_bytes": 10}]
    assert api["env"]["LOG_LEVEL"] == "debug"


def test_an_asset_for_a_service_the_manifest_lacks_is_refused_with_its_pointer():
    with pytest.raises(ManifestInvalid) as refused:
        assemble(settings={"assets": [{"service": "nobody", "path": "x.bin", "sha256": "c" * 64, "size_bytes": 1}]})
    assert refused.value.field == "/settings/assets/0/service"


def test_the_export_is_canonical_and_the_same_version_gives_the_same_bytes():
    first, second = assemble(), assemble(lookup=lookup_of(sample_files()))
    assert first.canonical == second.canonical and first.sha256 == second.sha256
    assert first.sha256 == hashlib.sha256(first.canonical).hexdigest()
    assert first.canonical == json.dumps(first.document, sort_keys=True, separators=(",", ":")).encode()
    assert b"\n" not in first.canonical and json.loads(first.canonical) == first.document
    assert canonical_json({"b": 1, "a": "é"}) == b'{"a":"\\u00e9","b":1}'
    assert assemble(settings={"platforms": ["linux-x64"]}).sha256 != first.sha256


def test_an_infrastructure_secret_left_in_refuses_assembly_naming_it_and_the_swap_that_removes_it():
    with pytest.raises(InfrastructureSecrets) as refused:
        assemble(tier="server", swaps={})
    error = refused.value
    assert error.status_code == 422 and error.code == "infrastructure_secret"
    assert "POSTGRES_PASSWORD" in error.detail and "swap postgres → sqlite removes it" in error.detail
    [secret] = error.extra["secrets"]
    assert secret["id"] == "POSTGRES_PASSWORD" and secret["owners"] == ["resource:postgres"]
    assert [(s["original"], s["replacement"]) for s in secret["swaps"]] == [("postgres", "sqlite")]
    # The decision the refusal offers makes it assemble.
    manifest = assemble(tier="server", swaps={}, secrets={"POSTGRES_PASSWORD": {"class": "per_install_generated"}})
    assert "postgres" in services(manifest)
    assert services(manifest)["postgres"]["secrets"] == ["POSTGRES_PASSWORD"]
    # postgres exports its password (`from_runtime_env`): the services that connect to it receive it too.
    assert services(manifest)["picker-wheel-api"]["secrets"] == ["PICKER_SESSION_KEY", "POSTGRES_PASSWORD"]


def test_a_scenario_blocked_on_the_tier_refuses_assembly_with_the_swaps_that_help():
    with pytest.raises(NotDeployable) as refused:
        assemble(tier="desktop", swaps={})
    error = refused.value
    assert error.extra["blocking"] == ["resource:postgres"]
    assert error.extra["swaps"] and error.extra["swaps"][0].startswith("postgres → sqlite: desktop +")
    assert "Needs a PostgreSQL server" in error.detail


@pytest.mark.parametrize(("breakage", "pointer"), [
    (lambda d: d.pop("schema_version"), ""),
    (lambda d: d.update(schema_version="v0.2"), "/schema_version"),
    (lambda d: d.update(target="cloud"), "/target"),
    (lambda d: d["services"][0].update(binaries={}), "/services/0/binaries"),
    (lambda d: d["services"][0]["binaries"].update({"amiga-68k": {"path": "x"}}), "/services/0/binaries"),
    (lambda d: d["services"][0]["binaries"]["linux-x64"].update(path="../../etc/passwd"),
     "/services/0/binaries/linux-x64/path"),
    (lambda d: d["secrets"][0].update({"class": "infrastructure"}), "/secrets/0/class"),
    (lambda d: d["secrets"][0].pop("generator"), "/secrets/0"),
    (lambda d: d["services"][3]["assets"][0].update(sha256="nothex"), "/services/3/assets/0/sha256"),
    (lambda d: d["services"][1].update(dependencies=["nobody"]), "/services/1/dependencies/0"),
    (lambda d: d["services"][2].update(secrets=["NOT_PLANNED"]), "/services/2/secrets/0"),
    (lambda d: d["services"][2].update(id="ollama"), "/services/2/id"),
])
def test_validation_names_every_error_by_json_pointer(breakage, pointer):
    document = copy.deepcopy(assemble().document)
    document["secrets"].sort(key=lambda secret: secret["class"] != "per_install_generated")
    breakage(document)
    errors = validate_manifest(document)
    assert pointer in [error["pointer"] for error in errors], errors
    assert all({"pointer", "message", "keyword"} == set(error) for error in errors)


def test_an_invalid_assembly_is_refused_with_all_its_errors(monkeypatch):
    from deployments.manifest import assemble as assemble_module

    monkeypatch.setattr(assemble_module, "DEFAULT_IPC", {**assemble_module.DEFAULT_IPC, "port": 0})
    with pytest.raises(ManifestInvalid) as refused:
        assemble()
    assert refused.value.extra["errors"][0]["pointer"] == "/ipc/port"
