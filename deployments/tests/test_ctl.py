"""`swarmctl scenario|profile|manifest` against a real server: the walkthrough of docs/deployments.md, and refusals."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import token_client
from deployments.models import CatalogSnapshot, ProfileVersion
from deployments.tests.conftest import SAMPLE_CATALOG, catalog, scenario_file, tarball
from deployments.tests.test_api import SAMPLE_SHA256
from swarm_agent.ctl.deploy import pack_catalog

pytestmark = pytest.mark.live


def swarmctl(url, token, *args, timeout=90):
    env = dict(os.environ, SWARM_URL=url, SWARM_TOKEN=token)
    done = subprocess.run([sys.executable, "-m", "swarm_agent.cli_ctl", *args], env=env, capture_output=True,
                          timeout=timeout)
    done.out, done.err = done.stdout.decode(), done.stderr.decode()
    return done


def test_import_analyze_profile_swap_diff_assemble_validate_export(live_url, tenant, tmp_path):
    token = token_client("engine", tenant).token
    imported = swarmctl(live_url, token, "scenario", "import", str(SAMPLE_CATALOG))
    assert imported.returncode == 0, imported.err
    assert f"snapshot {SAMPLE_SHA256} (imported): 2 scenarios, 6 resources" in imported.out
    again = swarmctl(live_url, token, "scenario", "import", str(SAMPLE_CATALOG))
    assert "(already imported)" in again.out and CatalogSnapshot.objects.count() == 1

    analysis = swarmctl(live_url, token, "scenario", "analyze", "picker-wheel", "--snapshot", SAMPLE_SHA256,
                        "--tier", "desktop")
    assert analysis.returncode == 0, analysis.err
    assert "resource:postgres" in analysis.out and "requirements: 960 MB RAM" in analysis.out
    assert "desktop: 0.20, not deployable — blocked by resource:postgres" in analysis.out
    assert "swap: postgres → sqlite: desktop +0.70 (unblocks)" in analysis.out

    created = swarmctl(live_url, token, "profile", "create", "wheel", "--snapshot", SAMPLE_SHA256, "--scenario",
                       "picker-wheel", "--tier", "tier-2-desktop", "--json")
    assert created.returncode == 0, created.err
    profile_id = str(json.loads(created.out)["id"])
    refused = swarmctl(live_url, token, "manifest", "assemble", profile_id)
    assert refused.returncode == 1 and "not_deployable" in refused.err and "postgres → sqlite" in refused.err
    swapped = swarmctl(live_url, token, "profile", "swap", profile_id, "postgres", "sqlite")
    assert swapped.returncode == 0 and "v2" in swapped.out and "add /swaps/postgres" in swapped.out
    changed = swarmctl(live_url, token, "profile", "set", profile_id, "--settings", '{"platforms": ["linux-x64"]}',
                       "--secret", "PICKER_SESSION_KEY=user_prompt", "--note", "linux")
    assert changed.returncode == 0, changed.err
    assert ProfileVersion.objects.filter(profile_id=profile_id).count() == 4
    diff = swarmctl(live_url, token, "profile", "diff", profile_id, "--from", "1", "--to", "3")
    assert "v1 → v3" in diff.out and "/swaps/postgres" in diff.out and "/settings/platforms" in diff.out
    shown = swarmctl(live_url, token, "profile", "show", profile_id, "--versions")
    assert "v4: picker-wheel on desktop, swaps postgres → sqlite" in shown.out and "  v1 " in shown.out

    assembled = swarmctl(live_url, token, "manifest", "assemble", profile_id, "-o", str(tmp_path / "a.json"))
    assert assembled.returncode == 0, assembled.err
    assert "secret PICKER_SESSION_KEY: user_prompt" in assembled.out and "platforms linux-x64" in assembled.out
    exported = swarmctl(live_url, token, "manifest", "export", profile_id, "-o", str(tmp_path / "bundle.json"))
    digest = hashlib.sha256((tmp_path / "bundle.json").read_bytes()).hexdigest()
    assert f"sha256 {digest}" in exported.err
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "bundle.json").read_bytes()
    valid = swarmctl(live_url, token, "manifest", "validate", str(tmp_path / "bundle.json"))
    assert valid.returncode == 0 and digest in valid.out
    broken = json.loads((tmp_path / "bundle.json").read_bytes())
    broken["services"][0]["type"] = "spaceship"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    invalid = swarmctl(live_url, token, "manifest", "validate", str(tmp_path / "broken.json"))
    assert invalid.returncode == 1 and "/services/0/type" in invalid.err


def test_refusals_print_their_details_and_exit_1(live_url, tenant, tmp_path):
    token = token_client("engine", tenant).token
    (tmp_path / "cycle.tar.gz").write_bytes(tarball(catalog(
        scenario_file("a", scenarios={"b": {}}), scenario_file("b", scenarios={"a": {}}),
        scenario_file("top", scenarios={"a": {}}))))
    imported = swarmctl(live_url, token, "scenario", "import", str(tmp_path / "cycle.tar.gz"), "--json")
    snapshot = json.loads(imported.out)["snapshot"]["sha256"]
    cycle = swarmctl(live_url, token, "scenario", "analyze", "top", "--snapshot", snapshot)
    assert cycle.returncode == 1 and "dependency_cycle" in cycle.err
    assert "cycle: scenario:a → scenario:b → scenario:a" in cycle.err

    swarmctl(live_url, token, "scenario", "import", str(SAMPLE_CATALOG))
    server = swarmctl(live_url, token, "profile", "create", "wheel-server", "--snapshot", SAMPLE_SHA256,
                      "--scenario", "picker-wheel", "--tier", "server", "--json")
    profile_id = str(json.loads(server.out)["id"])
    refused = swarmctl(live_url, token, "manifest", "assemble", profile_id)
    assert refused.returncode == 1 and "infrastructure_secret" in refused.err
    assert "infrastructure secret POSTGRES_PASSWORD: swap postgres → sqlite" in refused.err
    bad_tier = swarmctl(live_url, token, "profile", "set", profile_id, "--tier", "moon")
    assert bad_tier.returncode == 1 and "unknown_tier" in bad_tier.err
    evil = tarfile.TarInfo("../evil")
    evil.size = 1
    (tmp_path / "evil.tar.gz").write_bytes(tarball({}, members=[evil]))
    hostile = swarmctl(live_url, token, "scenario", "import", str(tmp_path / "evil.tar.gz"))
    assert hostile.returncode == 1 and "path_traversal" in hostile.err


def test_a_directory_is_packed_with_only_its_catalog_files_and_reproducibly(tmp_path):
    tree = tmp_path / "tree"
    (tree / "scenarios/app/.vrooli").mkdir(parents=True)
    (tree / "scenarios/app/.vrooli/service.json").write_text("{}")
    (tree / "scenarios/app/node_modules").mkdir()
    (tree / "scenarios/app/node_modules/huge.js").write_text("x")
    (tree / "resources/pg").mkdir(parents=True)
    (tree / "resources/pg/resource.json").symlink_to("/etc/passwd")
    assert pack_catalog(tree, tmp_path / "one.tar.gz") == 1
    os.utime(tree / "scenarios/app/.vrooli/service.json", (0, 12345))
    pack_catalog(tree, tmp_path / "two.tar.gz")
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "one.tar.gz") as archive:
        assert archive.getnames() == ["scenarios/app/.vrooli/service.json"]
