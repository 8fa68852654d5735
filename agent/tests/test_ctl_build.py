"""`swarmctl build trigger` names a job by tenant and name, or by its bare name or id."""
from swarm_agent.ctl.build import job_path


def test_a_tenant_and_name_use_the_unambiguous_path():
    assert job_path("acme/web") == "/tenants/acme/jobs/web"


def test_a_bare_name_or_id_uses_the_jobs_path():
    assert job_path("web") == "/jobs/web"
    assert job_path("42") == "/jobs/42"


def test_path_pieces_are_quoted():
    assert job_path("ac me/w?b") == "/tenants/ac%20me/jobs/w%3Fb"
