"""The user-facing builds API: jobs CRUD, triggers, lists and filters, logs, cancel, retry, tenancy, schema."""
import pytest

from builds.choices import BuildState
from builds.models import Build, BuildAttempt, BuildLogChunk, Job
from builds.services import build_claim, build_trigger
from builds.tests.factories import make_drone, make_job

JOB = {"name": "web", "scm_url": "https://git.example.com/acme/web.git",
       "build_config": {"steps": ["make test"], "artifacts": ["dist/*"], "timeout": 600, "labels": ["linux"]}}


@pytest.mark.django_db
def test_job_crud_with_validation_and_hidden_secrets(engine_api, tenant):
    response = engine_api.post("/api/v1/jobs", {**JOB, "secrets": {"NPM_TOKEN": "abcdef"},
                                                "scm_credential": "user:pw"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["tenant"] == "acme" and body["queue"] == "default" and body["secret_names"] == ["NPM_TOKEN"]
    assert body["has_scm_credential"] is True and "abcdef" not in str(body) and "pw" not in str(body)
    assert body["build_config"]["retry"] == {"max": 1, "when": ["runner_system_failure", "source_failure"]}
    job_id = body["id"]
    assert engine_api.post("/api/v1/jobs", JOB, format="json").status_code == 409
    bad = engine_api.post("/api/v1/jobs", {**JOB, "name": "x", "build_config": {"steps": []}}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "build_config.steps"
    bad = engine_api.post("/api/v1/jobs", {**JOB, "name": "y", "build_config": {"steps": ["a"], "timeout": -1}},
                          format="json")
    assert bad.json()["field"] == "build_config.timeout"
    bad = engine_api.post("/api/v1/jobs", {**JOB, "name": "z", "scm_url": "ftp://x"}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "scm_url"
    bad = engine_api.post("/api/v1/jobs", {**JOB, "name": "q", "queue": "nope"}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "queue"
    assert Job.objects.count() == 1
    patched = engine_api.patch(f"/api/v1/jobs/{job_id}", {"branch_filter": "main", "queue": "test"}, format="json")
    assert patched.status_code == 200 and patched.json()["queue"] == "test"
    assert engine_api.get("/api/v1/jobs/web").json()["id"] == job_id
    assert engine_api.get("/api/v1/jobs").json()["count"] == 1
    assert engine_api.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_another_tenants_jobs_and_builds_are_404(engine_api, other_engine_api, tenant, read_api):
    job = make_job(tenant=tenant)
    build = build_trigger(job=job, trigger="api")
    for path in (f"/api/v1/jobs/{job.pk}", f"/api/v1/builds/{build.pk}", f"/api/v1/builds/{build.pk}/log",
                 f"/api/v1/builds/{build.pk}/artifacts"):
        assert other_engine_api.get(path).status_code == 404, path
        assert engine_api.get(path).status_code == 200, path
    assert other_engine_api.post(f"/api/v1/jobs/{job.pk}/trigger", {}, format="json").status_code == 404
    assert other_engine_api.post(f"/api/v1/builds/{build.pk}/cancel").status_code == 404
    assert other_engine_api.get("/api/v1/builds").json()["count"] == 0
    assert read_api.get(f"/api/v1/builds/{build.pk}").status_code == 200
    assert read_api.post(f"/api/v1/builds/{build.pk}/cancel").status_code == 403
    assert read_api.post(f"/api/v1/jobs/{job.pk}/trigger", {}, format="json").status_code == 403


@pytest.mark.django_db
def test_trigger_list_filters_cancel_and_retry(admin_api):
    job = make_job(name="api-job")
    response = admin_api.post(f"/api/v1/jobs/{job.pk}/trigger", {"branch": "dev", "sha": "ABC1234",
                                                                 "params": {"FLAVOR": "fast"}}, format="json")
    assert response.status_code == 201
    build = response.json()
    assert (build["branch"], build["commit_sha"], build["state"], build["number"]) == ("dev", "abc1234", "pending", 1)
    bad = admin_api.post(f"/api/v1/jobs/{job.pk}/trigger", {"sha": "not-hex!"}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "commit_sha"
    second = build_trigger(job=job, trigger="api")
    assert second.number == 2
    assert admin_api.get("/api/v1/builds?state=pending&job=api-job").json()["count"] == 2
    assert admin_api.get("/api/v1/builds?state=bogus").status_code == 400
    cancel = admin_api.post(f"/api/v1/builds/{build['id']}/cancel")
    assert cancel.status_code == 200 and cancel.json()["state"] == "canceled"
    assert admin_api.post(f"/api/v1/builds/{build['id']}/cancel").status_code == 409
    assert admin_api.post(f"/api/v1/builds/{second.pk}/retry").status_code == 409
    retry = admin_api.post(f"/api/v1/builds/{build['id']}/retry")
    assert retry.status_code == 201
    assert (retry.json()["trigger"], retry.json()["retry_of"], retry.json()["commit_sha"]) == (
        "retry", build["id"], "abc1234")
    drone, _ = make_drone("lister")
    build_claim(drone=drone)
    assert admin_api.get("/api/v1/builds?drone=lister").json()["count"] == 1


@pytest.mark.django_db
def test_log_reads_from_an_offset(admin_api):
    job = make_job()
    build = build_trigger(job=job, trigger="api")
    drone, _ = make_drone()
    build_claim(drone=drone)
    attempt = BuildAttempt.objects.get(build=build)
    BuildLogChunk.objects.create(attempt=attempt, offset=0, data=b"hello ")
    BuildLogChunk.objects.create(attempt=attempt, offset=6, data=b"world\n")
    BuildAttempt.objects.filter(pk=attempt.pk).update(log_size=12)
    response = admin_api.get(f"/api/v1/builds/{build.pk}/log")
    assert b"".join(response.streaming_content) == b"hello world\n" and response["X-Log-Size"] == "12"
    response = admin_api.get(f"/api/v1/builds/{build.pk}/log?offset=8")
    assert b"".join(response.streaming_content) == b"rld\n" and response["X-Log-Offset"] == "12"
    assert admin_api.get(f"/api/v1/builds/{build.pk}/log?offset=-1").status_code == 400
    assert admin_api.get(f"/api/v1/builds/{build.pk}/log?attempt=9").status_code == 404
    detail = admin_api.get(f"/api/v1/builds/{build.pk}").json()
    assert detail["attempts"][0]["log_size"] == 12 and detail["state"] == BuildState.ASSIGNED


@pytest.mark.django_db
def test_drone_tokens_cannot_use_user_endpoints_and_users_cannot_claim(admin_api):
    _, drone_client = make_drone()
    assert drone_client.get("/api/v1/jobs").status_code == 403
    assert admin_api.post("/api/v1/builds/request", {"free_slots": 1}, format="json").status_code == 403
    assert Build.objects.count() == 0


@pytest.mark.django_db
def test_openapi_schema_is_valid(admin_api):
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    assert "/api/v1/builds/request" in schema["paths"] and "/api/v1/builds/{build_id}/log" in schema["paths"]


@pytest.mark.django_db
def test_admin_job_form_validates_like_the_api_and_trigger_action_queues(admin_client):
    from builds.models import Queue

    form = {"name": "admin-job", "scm_url": "file:///srv/git/app", "default_branch": "main", "branch_filter": "",
            "build_config": '{"steps": []}', "queue": Queue.objects.get(name="default").pk, "enabled": "on",
            "description": "", "webhook_secret": ""}
    response = admin_client.post("/admin/builds/job/add/", form)
    assert response.status_code == 200 and b"build_config.steps" in response.content
    form["build_config"] = '{"steps": ["make"]}'
    response = admin_client.post("/admin/builds/job/add/", form)
    assert response.status_code == 302, response.content[:2000]
    job = Job.objects.get(name="admin-job")
    assert job.scm_url_normalized == "file:///srv/git/app" and job.build_config["timeout"] == 3600
    response = admin_client.post("/admin/builds/job/", {"action": "trigger_builds", "_selected_action": [job.pk]})
    assert response.status_code == 302
    build = Build.objects.get(job=job)
    assert build.trigger == "manual" and build.triggered_by.startswith("user:")
    page = admin_client.get(f"/admin/builds/build/{build.pk}/change/")
    assert page.status_code == 200 and f"/ws/builds/{build.pk}/log/".encode() in page.content
    cancel = admin_client.post(f"/admin/builds/build/{build.pk}/cancel/")
    assert cancel.status_code == 302
    build.refresh_from_db()
    assert build.state == BuildState.CANCELED


# --- hostile input: git refs, commit ids, unknown fields, params ------------------

HOSTILE_BRANCHES = ["a\nb", "a\x1bb", "a\u202eb", "../../etc", "-upload-pack=touch /tmp/x", "@", "x" * 201,
                    "main.lock", "a b", "HEAD"]


@pytest.mark.django_db
@pytest.mark.parametrize("branch", HOSTILE_BRANCHES)
def test_job_default_branch_must_be_a_valid_git_branch_name(engine_api, tenant, branch):
    response = engine_api.post("/api/v1/jobs", {**JOB, "default_branch": branch}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] in ("invalid_ref", "max_length") and response.json()["field"] == "default_branch"
    job = make_job(name="patched", tenant=tenant)
    response = engine_api.patch(f"/api/v1/jobs/{job.pk}", {"default_branch": branch}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "default_branch"
    assert Job.objects.get(pk=job.pk).default_branch == ""  # unchanged: the repository default
    assert Job.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("branch_filter", ["main,a\nb", "*\u202e", "../*", "release/*.lock"])
def test_job_branch_filter_globs_must_be_able_to_match_a_branch(engine_api, tenant, branch_filter):
    response = engine_api.post("/api/v1/jobs", {**JOB, "branch_filter": branch_filter}, format="json")
    assert response.status_code == 400 and response.json() == {**response.json(), "error": "invalid_ref",
                                                               "field": "branch_filter"}


@pytest.mark.django_db
@pytest.mark.parametrize("branch", HOSTILE_BRANCHES)
def test_trigger_branch_must_be_a_valid_git_branch_name(admin_api, branch):
    job = make_job(name="refs")
    response = admin_api.post(f"/api/v1/jobs/{job.pk}/trigger", {"branch": branch}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "branch" and response.json()["error"] in ("invalid_ref", "max_length")
    assert not Build.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("sha", ["abc12", "z" * 40, "a" * 65, "abc 1234", "\uff41" * 7])
def test_trigger_commit_sha_is_7_to_64_hex_digits(admin_api, sha):
    job = make_job(name="shas")
    for field in ("commit_sha", "sha"):
        response = admin_api.post(f"/api/v1/jobs/{job.pk}/trigger", {field: sha}, format="json")
        assert response.status_code == 400, response.content
        assert response.json()["field"] in ("commit_sha", "sha")
    assert not Build.objects.exists()
    built = admin_api.post(f"/api/v1/jobs/{job.pk}/trigger", {"commit_sha": "ABCDEF1"}, format="json")
    assert built.status_code == 201 and built.json()["commit_sha"] == "abcdef1"


@pytest.mark.django_db
def test_a_default_branch_stored_before_the_rules_is_refused_at_trigger(admin_api):
    job = make_job(name="legacy")
    Job.objects.filter(pk=job.pk).update(default_branch="--upload-pack=x")
    response = admin_api.post(f"/api/v1/jobs/{job.pk}/trigger", {}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "default_branch"
    assert admin_api.post(f"/api/v1/jobs/{job.pk}/trigger", {"branch": "main"}, format="json").status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("params, field", [({"K": "a\\u0000b"}, "params.K"), ({"k\\ud800": "v"}, "params.k\\ud800"),
                                           ("not-an-object", "params"), ([1, 2], "params"),
                                           ({"1BAD": "x"}, "params.1BAD"), ({"A-B": "x"}, "params.A-B"),
                                           ({"OK": {"nested": 1}}, "params.OK"), ({"OK": None}, "params.OK")])
def test_trigger_params_are_a_json_object_without_nul_or_surrogates(admin_api, params, field):
    import json

    job = make_job(name="params")
    body = json.dumps({"params": params}).replace("\\\\u", "\\u")
    response = admin_api.post(f"/api/v1/jobs/{job.pk}/trigger", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert not Build.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("path, method, body, field", [
    ("/api/v1/jobs", "post", {**JOB, "branh": "dev"}, "branh"),
    ("/api/v1/jobs", "post", {**JOB, "id": 9}, "id"),
    ("/api/v1/jobs/{job}", "patch", {"default_brunch": "dev"}, "default_brunch"),
    ("/api/v1/jobs/{job}", "patch", {"has_scm_credential": False}, "has_scm_credential"),
    ("/api/v1/jobs/{job}/trigger", "post", {"branh": "dev"}, "branh"),
    ("/api/v1/jobs/{job}/trigger", "post", {"branch": "main", "padding": "x" * 100_000}, "padding"),
])
def test_job_and_trigger_bodies_refuse_unknown_fields(admin_api, path, method, body, field):
    job = make_job(name="strict")
    response = getattr(admin_api, method)(path.format(job=job.pk), body, format="json")
    assert response.status_code == 400, response.content
    assert (response.json()["error"], response.json()["field"]) == ("unknown_field", field)
    assert not Build.objects.exists() and Job.objects.get().default_branch == ""


@pytest.mark.django_db
def test_admin_job_form_refuses_a_hostile_default_branch(admin_client):
    from builds.models import Queue

    form = {"name": "admin-refs", "scm_url": "file:///srv/git/app", "default_branch": "a\u202eb",
            "branch_filter": "main", "build_config": '{"steps": ["make"]}',
            "queue": Queue.objects.get(name="default").pk, "enabled": "on", "description": "", "webhook_secret": ""}
    response = admin_client.post("/admin/builds/job/add/", form)
    assert response.status_code == 200 and b"not a valid git branch name" in response.content
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("body, field", [
    ({"scm_url": "http://[::1"}, "scm_url"),
    ({"scm_url": "https://git.example.com:99999/a/b"}, "scm_url"),
    # An object where a failure reason belongs was a 500 ("unhashable type: 'dict'").
    ({"build_config": {"steps": ["x"], "retry": {"max": 1, "when": [{}]}}}, "build_config.retry.when"),
    ({"build_config": {"steps": ["x"], "notifications": {"on": [["failed"]]}}}, "build_config.notifications.on"),
])
def test_malformed_job_fields_are_a_400_on_create_and_change(admin_api, body, field):
    response = admin_api.post("/api/v1/jobs", {**JOB, **body}, format="json")
    assert response.status_code == 400 and response.json()["field"] == field, response.content
    job = make_job(name="changed")
    response = admin_api.patch(f"/api/v1/jobs/{job.pk}", body, format="json")
    assert response.status_code == 400 and response.json()["field"] == field, response.content
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_a_job_s_tenant_cannot_be_changed_and_saying_so_is_refused(admin_api, tenant):
    job = make_job(name="tenanted", tenant=tenant)
    response = admin_api.patch(f"/api/v1/jobs/{job.pk}", {"tenant": "acme", "description": "x"}, format="json")
    assert response.status_code == 400 and response.json()["error"] == "unknown_field"
    assert response.json()["field"] == "tenant" and "tenant" not in response.json()["detail"].split("takes")[1]
    assert Job.objects.get(pk=job.pk).description == ""
