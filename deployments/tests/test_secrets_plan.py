"""The secrets plan: classification where real catalogs put secrets, decisions, exclusions, the fixes offered."""
from __future__ import annotations

import json

import pytest

from deployments.analysis import analyze
from deployments.secrets_plan import plan_secrets
from deployments.tests.conftest import catalog, lookup_of, resource_file, sample_files, scenario_file

pytestmark = pytest.mark.django_db


def plan(lookup, scenario: str, tier: str, swaps=None, decisions=None, settings=None) -> dict:
    def analysis_for(wanted):
        return analyze(lookup, scenario, wanted)
    return plan_secrets(analysis=analysis_for(swaps or {}), lookup=lookup, tier=tier, decisions=decisions,
                        settings=settings, analysis_for=analysis_for)


@pytest.fixture
def sample():
    return lookup_of(sample_files())


def by_id(items) -> dict:
    return {item["id"]: item for item in items}


def test_the_bundle_safe_plan_of_the_swapped_desktop_profile(sample):
    result = plan(sample, "picker-wheel", "desktop", swaps={"postgres": "sqlite"})
    assert result["bundle_safe"] is True and result["infrastructure"] == []
    secrets = by_id(result["secrets"])
    assert sorted(secrets) == ["HUB_WEBHOOK_SECRET", "OPENROUTER_API_KEY", "PICKER_SESSION_KEY"]
    session = secrets["PICKER_SESSION_KEY"]
    assert session["class"] == "per_install_generated"
    assert session["generator"] == {"type": "random", "length": 48, "charset": "alnum"}  # as the scenario declares
    assert session["target"] == {"type": "env", "name": "PICKER_SESSION_KEY"}
    webhook = secrets["HUB_WEBHOOK_SECRET"]  # a secret-named key of notification-hub's `environment`
    assert webhook["class"] == "per_install_generated"
    assert webhook["generator"] == {"type": "random", "length": 32, "charset": "alnum"}
    key = secrets["OPENROUTER_API_KEY"]  # credentials.descriptors of resources/openrouter/resource.json
    assert key["class"] == "user_prompt"
    assert key["prompt"] == {"label": "OpenRouter API Key",
                             "description": "OpenRouter unified API gateway across LLM providers.",
                             "hint": "https://openrouter.ai/keys",
                             "validation": {"pattern": "^sk-or-[A-Za-z0-9-]{16,}$"}}
    assert key["owners"] == ["resource:openrouter"]
    assert "dev-only-webhook-secret" not in json.dumps(result)


def test_a_resources_runtime_env_password_is_an_infrastructure_secret_with_its_fix(sample):
    result = plan(sample, "picker-wheel", "server")
    assert result["bundle_safe"] is False
    [item] = result["infrastructure"]
    assert item["id"] == "POSTGRES_PASSWORD" and item["declared_class"] == "infrastructure"
    assert item["found_in"] == ["resources/postgres/resource.json#/runtime/env/POSTGRES_PASSWORD (runtime.env)"]
    assert item["derived_env"] == ["DATABASE_URL", "POSTGRES_URL"]
    assert [(s["original"], s["replacement"]) for s in item["fixes"]["swaps"]] == [("postgres", "sqlite")]
    [excluded] = [entry for entry in result["excluded"] if entry["id"] == "POSTGRES_PASSWORD"]
    assert "never goes into a bundle" in excluded["reason"]
    assert "swap postgres → sqlite removes it" in excluded["reason"]
    assert "POSTGRES_PASSWORD" not in by_id(result["secrets"])


def test_a_decision_reclassifies_a_secret(sample):
    result = plan(sample, "picker-wheel", "server", decisions={
        "POSTGRES_PASSWORD": {"class": "per_install_generated", "generator": {"type": "hex", "bytes": 24}},
        "OPENROUTER_API_KEY": {"class": "remote_fetch", "remote": {"source": "vault://secret/acme/openrouter"}},
        "GONE": {"class": "user_prompt", "prompt": {"label": "x"}}})
    assert result["bundle_safe"] is True
    secrets = by_id(result["secrets"])
    password = secrets["POSTGRES_PASSWORD"]
    assert (password["class"], password["declared_class"], password["decided"]) == (
        "per_install_generated", "infrastructure", True)
    assert password["generator"] == {"type": "hex", "bytes": 24}
    assert secrets["OPENROUTER_API_KEY"]["remote"] == {"source": "vault://secret/acme/openrouter"}
    assert result["unused_decisions"] == ["GONE"]


def test_an_optional_dependency_left_out_of_a_tier_takes_its_secrets_with_it():
    files = catalog(
        scenario_file("app", resources={"mailer": {"required": False}}, tier_feasibility={"dependencies": {
            "resources": {"mailer": {"platform_support": {"tier-3-mobile": {"supported": False,
                                                                            "reason": "no SMTP from a phone"}}}}}}),
        resource_file("mailer", credentials={"env": ["MAILER_TOKEN"]}))
    lookup = lookup_of(files)
    mobile = plan(lookup, "app", "mobile")
    assert mobile["secrets"] == []
    [excluded] = mobile["excluded"]
    assert excluded["id"] == "MAILER_TOKEN"
    assert excluded["reason"] == ("resource:mailer is not in the mobile bundle: optional and unsupported on "
                                  "mobile: no SMTP from a phone")
    assert by_id(plan(lookup, "app", "local")["secrets"])["MAILER_TOKEN"]["class"] == "user_prompt"
    excluded_by_settings = plan(lookup, "app", "local", settings={"exclude_optional": ["mailer"]})
    assert excluded_by_settings["secrets"] == []
    assert "the profile's settings exclude" in excluded_by_settings["excluded"][0]["reason"]


def test_one_secret_declared_by_two_nodes_is_one_entry_the_strictest_declaration_wins():
    files = catalog(scenario_file("app", resources={"a": {}, "b": {}}),
                    resource_file("a", credentials={"env": [{"env": "SHARED_TOKEN", "classification": "user"}]}),
                    resource_file("b", runtime={"env": {"SHARED_TOKEN": "literal"}}))
    result = plan(lookup_of(files), "app", "local")
    [item] = result["infrastructure"]
    assert item["owners"] == ["resource:a", "resource:b"]
    assert item["fixes"]["swaps"] == []
    assert "no swap in this catalog removes it" in result["excluded"][0]["reason"]


def test_secrets_declared_per_tier_and_in_swarms_list():
    files = catalog(scenario_file("app", deployment={"tiers": {"tier-2-desktop": {"secrets": [
        {"secret_id": "app-admin-password", "classification": "user", "label": "Admin password"}]}}},
        secrets=[{"id": "tls-key", "class": "remote_fetch", "file": "certs/tls.key",
                  "remote": {"source": "vault://pki/app"}}]))
    secrets = by_id(plan(lookup_of(files), "app", "desktop")["secrets"])
    assert secrets["APP_ADMIN_PASSWORD"]["prompt"]["label"] == "Admin password"
    assert secrets["tls-key"]["target"] == {"type": "file", "name": "certs/tls.key"}
    assert secrets["tls-key"]["remote"] == {"source": "vault://pki/app"}
