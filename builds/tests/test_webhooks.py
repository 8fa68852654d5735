"""Forge webhooks: real signature schemes on the raw body, replays, forgeries, deletions, branch filters."""
import hashlib
import hmac
import json
import uuid

import pytest

from builds.models import Build, WebhookDelivery
from builds.tasks import process_webhook_delivery
from builds.tests.factories import make_job

SECRET = "s3cr3t-webhook-key"
REPO = "https://github.com/acme/app"


def github_push(ref="refs/heads/main", after="a" * 40, deleted=False, repo=REPO):
    return {"ref": ref, "after": after, "deleted": deleted, "pusher": {"name": "octocat"},
            "repository": {"clone_url": repo + ".git", "html_url": repo, "ssh_url": "git@github.com:acme/app.git"}}


def post_github(client, payload, *, secret=SECRET, delivery=None, event="push", raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.generic("POST", "/api/v1/webhooks/github", body, content_type="application/json",
                          HTTP_X_HUB_SIGNATURE_256=signature, HTTP_X_GITHUB_EVENT=event,
                          HTTP_X_GITHUB_DELIVERY=delivery or str(uuid.uuid4()))


def process_all():
    for delivery in WebhookDelivery.objects.filter(status="received"):
        process_webhook_delivery(delivery.pk)


@pytest.fixture
def github_job(db):
    return make_job(name="app", scm_url="git@github.com:acme/app.git", webhook_secret=SECRET,
                    branch_filter="main,release/*")


def test_signed_push_queues_one_build_and_a_replay_queues_nothing(anonymous_api, github_job):
    payload = github_push()
    first = post_github(anonymous_api, payload, delivery="delivery-1")
    assert first.status_code == 202 and first.json()["duplicate"] is False
    process_all()
    replay = post_github(anonymous_api, payload, delivery="delivery-1")
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    process_all()
    process_webhook_delivery(WebhookDelivery.objects.get().pk)  # a redelivered task changes nothing either
    build = Build.objects.get()
    assert (build.job, build.branch, build.commit_sha, build.trigger) == (github_job, "main", "a" * 40, "webhook")
    assert WebhookDelivery.objects.get().build_ids == [build.pk]


def test_forged_or_missing_signature_is_401_and_queues_nothing(anonymous_api, github_job):
    payload = github_push()
    assert post_github(anonymous_api, payload, secret="wrong").status_code == 401
    body = json.dumps(payload).encode()
    genuine = post_github(anonymous_api, payload, raw=body)  # the same bytes, correctly signed
    assert genuine.status_code == 202
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = anonymous_api.generic("POST", "/api/v1/webhooks/github", body.replace(b"main", b"mainx"),
                                     content_type="application/json", HTTP_X_HUB_SIGNATURE_256=signature,
                                     HTTP_X_GITHUB_EVENT="push", HTTP_X_GITHUB_DELIVERY="forged-body")
    assert response.status_code == 401 and response.json()["error"] == "bad_signature"
    unsigned = anonymous_api.generic("POST", "/api/v1/webhooks/github", body, content_type="application/json",
                                     HTTP_X_GITHUB_EVENT="push", HTTP_X_GITHUB_DELIVERY="unsigned")
    assert unsigned.status_code == 401
    assert not WebhookDelivery.objects.filter(delivery_id__in=["forged-body", "unsigned"]).exists()
    assert WebhookDelivery.objects.count() == 1


def test_branch_deletion_and_filtered_branches_are_ignored(anonymous_api, github_job):
    post_github(anonymous_api, github_push(after="0" * 40, deleted=True))
    post_github(anonymous_api, github_push(ref="refs/heads/feature/x"))
    post_github(anonymous_api, github_push(ref="refs/tags/v1.0"))
    post_github(anonymous_api, github_push(ref="refs/heads/release/2.0", after="b" * 40))
    process_all()
    assert list(Build.objects.values_list("branch", flat=True)) == ["release/2.0"]
    statuses = sorted(WebhookDelivery.objects.values_list("status", flat=True))
    assert statuses == ["ignored", "ignored", "ignored", "processed"]


def test_gitlab_token_and_bitbucket_hmac(anonymous_api, db):
    gitlab_job = make_job(name="gl", scm_url="https://gitlab.example.com/acme/app.git", webhook_secret="gl-token")
    bitbucket_job = make_job(name="bb", scm_url="https://bitbucket.org/acme/app.git", webhook_secret="bb-key")
    gitlab_body = json.dumps({"ref": "refs/heads/main", "after": "c" * 40, "checkout_sha": "c" * 40,
                              "user_username": "dev",
                              "project": {"git_http_url": "https://gitlab.example.com/acme/app.git"}}).encode()
    wrong = anonymous_api.generic("POST", "/api/v1/webhooks/gitlab", gitlab_body, content_type="application/json",
                                  HTTP_X_GITLAB_TOKEN="nope", HTTP_X_GITLAB_EVENT="Push Hook",
                                  HTTP_X_GITLAB_EVENT_UUID="gl-1")
    assert wrong.status_code == 401
    ok = anonymous_api.generic("POST", "/api/v1/webhooks/gitlab", gitlab_body, content_type="application/json",
                               HTTP_X_GITLAB_TOKEN="gl-token", HTTP_X_GITLAB_EVENT="Push Hook",
                               HTTP_X_GITLAB_EVENT_UUID="gl-1")
    assert ok.status_code == 202
    bitbucket_body = json.dumps({"actor": {"display_name": "Dev"},
                                 "repository": {"full_name": "acme/app",
                                                "links": {"html": {"href": "https://bitbucket.org/acme/app"}}},
                                 "push": {"changes": [{"new": {"type": "branch", "name": "main",
                                                               "target": {"hash": "d" * 40}}, "old": None}]}}).encode()
    signature = "sha256=" + hmac.new(b"bb-key", bitbucket_body, hashlib.sha256).hexdigest()
    ok = anonymous_api.generic("POST", "/api/v1/webhooks/bitbucket", bitbucket_body, content_type="application/json",
                               HTTP_X_HUB_SIGNATURE=signature, HTTP_X_EVENT_KEY="repo:push",
                               HTTP_X_REQUEST_UUID="bb-1")
    assert ok.status_code == 202
    process_all()
    assert set(Build.objects.values_list("job__name", "commit_sha")) == {("gl", "c" * 40), ("bb", "d" * 40)}
    assert {gitlab_job.pk, bitbucket_job.pk} == set(Build.objects.values_list("job_id", flat=True))


def test_global_secret_and_unknown_provider(anonymous_api, db, settings):
    settings.SWARM_WEBHOOK_SECRET = "global-key"
    make_job(name="app", scm_url=REPO)
    assert post_github(anonymous_api, github_push(), secret="global-key").status_code == 202
    process_all()
    assert Build.objects.count() == 1
    response = anonymous_api.post("/api/v1/webhooks/svn", {}, format="json")
    assert response.status_code == 404


def test_missing_delivery_id_is_400(anonymous_api, github_job):
    body = json.dumps(github_push()).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = anonymous_api.generic("POST", "/api/v1/webhooks/github", body, content_type="application/json",
                                     HTTP_X_HUB_SIGNATURE_256=signature, HTTP_X_GITHUB_EVENT="push")
    assert response.status_code == 400 and response.json()["field"] == "X-GitHub-Delivery"
    assert not WebhookDelivery.objects.exists()


def _raw_job_columns(job_id: int) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM builds_job WHERE id = %s", [job_id])
        return dict(zip([column.name for column in cursor.description], cursor.fetchone(), strict=True))


def test_the_job_webhook_secret_is_stored_encrypted_and_still_verifies(anonymous_api, github_job):
    from swarm.core.secret_box import decrypt_text

    raw = _raw_job_columns(github_job.pk)
    assert "webhook_secret" not in raw, "the plaintext column is gone"
    assert SECRET not in str(raw)
    assert decrypt_text(raw["webhook_secret_encrypted"]) == SECRET
    assert post_github(anonymous_api, github_push()).status_code == 202
    process_all()
    assert Build.objects.filter(job=github_job).count() == 1


def test_a_job_whose_webhook_secret_no_key_decrypts_verifies_nothing(anonymous_api, github_job, settings, caplog):
    from cryptography.fernet import Fernet

    from builds.models import Job

    lost_key = Fernet(Fernet.generate_key())
    Job.objects.filter(pk=github_job.pk).update(webhook_secret_encrypted=lost_key.encrypt(SECRET.encode()).decode())
    response = post_github(anonymous_api, github_push())
    assert response.status_code == 401 and not WebhookDelivery.objects.exists()
    assert f"builds.Job {github_job.pk} webhook_secret_encrypted" in caplog.text
    settings.SWARM_WEBHOOK_SECRET = "global-key"  # the global secret does not stand in for the job's own
    answer = post_github(anonymous_api, github_push(), secret="global-key")
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert "has its own webhook secret" in answer.json()["detail"]
    process_all()
    assert not Build.objects.exists()


def test_the_admin_writes_the_webhook_secret_encrypted_and_never_shows_it(admin_client, github_job):
    from builds.models import Job

    page = admin_client.get(f"/admin/builds/job/{github_job.pk}/change/")
    assert page.status_code == 200 and SECRET.encode() not in page.content
    form = {"name": github_job.name, "scm_url": github_job.scm_url, "default_branch": "main",
            "branch_filter": github_job.branch_filter, "build_config": json.dumps(github_job.build_config),
            "queue": github_job.queue_id, "enabled": "on", "description": "", "webhook_secret": ""}
    assert admin_client.post(f"/admin/builds/job/{github_job.pk}/change/", form).status_code == 302
    assert Job.objects.get(pk=github_job.pk).webhook_secret == SECRET, "blank keeps the stored secret"
    form["webhook_secret"] = "rotated-webhook-key"
    assert admin_client.post(f"/admin/builds/job/{github_job.pk}/change/", form).status_code == 302
    job = Job.objects.get(pk=github_job.pk)
    assert job.webhook_secret == "rotated-webhook-key"
    assert "rotated-webhook-key" not in str(_raw_job_columns(job.pk))
    form.update(webhook_secret="", clear_webhook_secret="on")
    assert admin_client.post(f"/admin/builds/job/{github_job.pk}/change/", form).status_code == 302
    assert Job.objects.get(pk=github_job.pk).webhook_secret_encrypted == ""


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_the_plaintext_webhook_secrets_already_stored():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from builds.models import Job
    from swarm.core.secret_box import decrypt_text

    before = [("builds", "0004_log_append_function")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old_apps = executor.loader.project_state(before).apps
        queue = old_apps.get_model("builds", "Queue").objects.create(name="migration-test")
        old_job = old_apps.get_model("builds", "Job")
        for name, secret in (("with-secret", SECRET), ("without", "")):
            old_job.objects.create(name=name, scm_url=REPO, scm_url_normalized=REPO, build_config={}, queue=queue,
                                   webhook_secret=secret)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    with_secret = Job.objects.get(name="with-secret")
    raw = _raw_job_columns(with_secret.pk)
    assert "webhook_secret" not in raw and SECRET not in str(raw)
    assert decrypt_text(raw["webhook_secret_encrypted"]) == SECRET == with_secret.webhook_secret
    assert Job.objects.get(name="without").webhook_secret_encrypted == ""


@pytest.mark.parametrize("ref, after, reason", [
    ("refs/heads/a\nb", "a" * 40, "control character U+000A"),
    ("refs/heads/\x1b[31mred", "a" * 40, "control character U+001B"),
    ("refs/heads/ma\u202ein", "a" * 40, "U+202E"),
    ("refs/heads/../../etc", "a" * 40, "'..'"),
    ("refs/heads/--upload-pack=touch /tmp/pwned", "a" * 40, "starts with '-'"),
    ("refs/heads/main", "not-a-commit", "a commit id is 7 to 64 hexadecimal digits"),
])
def test_a_hostile_pushed_ref_builds_nothing_and_the_delivery_says_why(db, anonymous_api, ref, after, reason):
    make_job(name="app", scm_url="git@github.com:acme/app.git", webhook_secret=SECRET)
    response = post_github(anonymous_api, github_push(ref=ref, after=after))
    assert response.status_code == 202, response.content
    process_all()
    delivery = WebhookDelivery.objects.get()
    assert not Build.objects.exists()
    assert delivery.status == "ignored" and "refused" in delivery.detail and reason in delivery.detail


@pytest.mark.parametrize("payload", [{"ref": 5}, {"ref": "refs/heads/main", "after": ["x"], "pusher": "me",
                                                  "repository": "nope"}])
def test_push_values_of_the_wrong_type_read_as_absent(payload):
    from builds.services.webhooks import parse_push_events

    pushes = parse_push_events(provider="github", event="push", payload=payload)
    assert all(isinstance(push.branch, str) and isinstance(push.commit_sha, str) for push in pushes)


def test_nul_in_a_signed_webhook_body_is_a_400_naming_the_field(anonymous_api, github_job):
    raw = json.dumps(github_push()).replace('"octocat"', '"octo\\u0000cat"').encode()
    response = post_github(anonymous_api, None, raw=raw)
    assert response.status_code == 400
    assert (response.json()["error"], response.json()["field"]) == ("invalid_text", "pusher.name")
    assert not WebhookDelivery.objects.exists()
    assert post_github(anonymous_api, None, raw=raw, secret="wrong").status_code == 401
    # A URL with a NUL matches no job (and is no 500 looking one up): no secret could apply to it.
    payload = {"ref": "refs/heads/main", "after": "a" * 40, "repository": {"clone_url": "https://x/a\u0000pp"}}
    answer = post_github(anonymous_api, None, raw=json.dumps(payload).encode())
    assert answer.status_code == 404 and answer.json()["error"] == "no_job"


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x", ""])
def test_a_webhook_body_that_is_not_json_by_its_type_is_415(anonymous_api, github_job, content_type):
    body = json.dumps(github_push()).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = anonymous_api.generic("POST", "/api/v1/webhooks/github", body, content_type=content_type,
                                     HTTP_X_HUB_SIGNATURE_256=signature, HTTP_X_GITHUB_EVENT="push",
                                     HTTP_X_GITHUB_DELIVERY="typed")
    assert response.status_code == 415 and response.json()["error"] == "unsupported_media_type"
    assert not WebhookDelivery.objects.exists()
    typed = anonymous_api.generic("POST", "/api/v1/webhooks/github", body,
                                  content_type="application/json; charset=utf-8", HTTP_X_HUB_SIGNATURE_256=signature,
                                  HTTP_X_GITHUB_EVENT="push", HTTP_X_GITHUB_DELIVERY="typed")
    assert typed.status_code == 202


@pytest.mark.parametrize("url", ["http://[::1", "https://github.com:99999/acme/app"])
def test_an_unparsable_repository_url_in_a_push_matches_no_job(anonymous_api, github_job, url):
    response = post_github(anonymous_api, github_push(repo=url) | {"repository": {"clone_url": url}})
    # No job's secret applies and no global secret is set: nothing watches it, nothing is stored.
    assert response.status_code == 404 and response.json()["error"] == "no_job"
    assert not WebhookDelivery.objects.exists()
