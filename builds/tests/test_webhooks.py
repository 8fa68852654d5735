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
