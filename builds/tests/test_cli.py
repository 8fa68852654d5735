"""`swarmctl build trigger --follow` and `swarmctl build logs -f` against a real server and agent."""
import os
import subprocess
import sys

import pytest

from builds.models import Build
from builds.tests.factories import make_git_repo, make_job

pytestmark = pytest.mark.live


def swarmctl(url, token, *args, timeout=90):
    env = dict(os.environ, SWARM_URL=url, SWARM_TOKEN=token)
    return subprocess.run([sys.executable, "-m", "swarm_agent.cli_ctl", "build", *args], env=env,
                          capture_output=True, timeout=timeout)


def test_trigger_follow_streams_the_log_and_exits_with_the_result(builds_live_url, build_agent, tmp_path,
                                                                   admin_api):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    make_job(name="cli-ok", scm_url=f"file://{tmp_path / 'repo'}", steps=['echo "hello from $FLAVOR"'])
    make_job(name="cli-fail", scm_url=f"file://{tmp_path / 'repo'}", steps=["echo about to fail", "exit 3"])
    build_agent("cli-drone")
    done = swarmctl(builds_live_url, admin_api.token, "trigger", "cli-ok", "--branch", "main", "--param",
                    "FLAVOR=vanilla", "--follow")
    assert done.returncode == 0, done.stderr.decode()
    assert b"hello from vanilla" in done.stdout and b"success" in done.stderr
    failed = swarmctl(builds_live_url, admin_api.token, "trigger", "cli-fail", "--follow")
    assert failed.returncode == 1 and b"about to fail" in failed.stdout and b"script_failure" in failed.stderr
    build = Build.objects.get(job__name="cli-ok")
    logs = swarmctl(builds_live_url, admin_api.token, "logs", str(build.pk), "-f")
    assert logs.returncode == 0 and logs.stdout.count(b"hello from vanilla") == 1
    missing = swarmctl(builds_live_url, admin_api.token, "logs", "999999")
    assert missing.returncode == 1 and b"not_found" in missing.stderr


def test_trigger_names_a_job_by_tenant_and_an_ambiguous_name_says_how(builds_live_url, admin_api, tenant,
                                                                      other_tenant):
    make_job(name="web", tenant=tenant)
    globex_job = make_job(name="web", tenant=other_tenant)
    ambiguous = swarmctl(builds_live_url, admin_api.token, "trigger", "web")
    assert ambiguous.returncode == 1 and b"ambiguous" in ambiguous.stderr
    assert b"/api/v1/tenants/globex/jobs/web" in ambiguous.stderr, ambiguous.stderr
    queued = swarmctl(builds_live_url, admin_api.token, "trigger", "globex/web", "--branch", "dev")
    assert queued.returncode == 0, queued.stderr.decode()
    build = Build.objects.get(pk=int(queued.stdout))
    assert (build.job_id, build.branch) == (globex_job.pk, "dev")
