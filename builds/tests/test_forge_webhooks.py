"""Forge webhooks answered as the forge's delivery log should show them, with payloads shaped like the forges'
documented examples: GitHub ping (repository and organisation hooks) and push (branch, tag, tag deletion),
form-encoded GitHub deliveries, GitLab Push Hook and Tag Push Hook (an older one without `user_username`),
Bitbucket Cloud repo:push, namespace secrets, disabled jobs, repositories no job watches."""
import hashlib
import hmac
import json
import uuid
from urllib.parse import urlencode

import pytest

from builds.config import normalize_scm_url
from builds.models import Build, WebhookDelivery, WebhookNamespaceSecret
from builds.services import job_update
from builds.tasks import process_webhook_delivery
from builds.tests.factories import make_job

SECRET = "It's a Secret to Everybody"
ORG_SECRET = "org-wide hook secret"


def _github_repository():
    """The `repository` object of GitHub's documented push example (Codertocat/Hello-World)."""
    return {
        "id": 186853002, "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=", "name": "Hello-World",
        "full_name": "Codertocat/Hello-World", "private": False,
        "owner": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com",
                  "login": "Codertocat", "id": 21031067, "type": "User", "site_admin": False},
        "html_url": "https://github.com/Codertocat/Hello-World", "description": None, "fork": False,
        "url": "https://github.com/Codertocat/Hello-World",
        "git_url": "git://github.com/Codertocat/Hello-World.git",
        "ssh_url": "git@github.com:Codertocat/Hello-World.git",
        "clone_url": "https://github.com/Codertocat/Hello-World.git",
        "svn_url": "https://github.com/Codertocat/Hello-World", "default_branch": "master",
    }


def github_push(ref="refs/heads/master", after="6113728f27ae82c7b1a177c8d03f9e96e0adf246", deleted=False,
                head_commit_id=None):
    return {
        "ref": ref, "before": "0000000000000000000000000000000000000000" if not deleted else after,
        "after": "0000000000000000000000000000000000000000" if deleted else after,
        "created": not deleted, "deleted": deleted, "forced": False, "base_ref": None,
        "compare": "https://github.com/Codertocat/Hello-World/compare/6113728f27ae...000000000000",
        "commits": [], "head_commit": None if deleted or head_commit_id is None else {"id": head_commit_id},
        "repository": _github_repository(),
        "pusher": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
        "sender": {"login": "Codertocat", "id": 21031067, "type": "User", "site_admin": False},
    }


def github_org_ping():
    """An organisation hook's ping: `organization` and `hook`, no `repository`."""
    return {
        "zen": "Keep it logically awesome.", "hook_id": 12345,
        "hook": {"type": "Organization", "id": 12345, "name": "web", "active": True, "events": ["push"],
                 "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://swarm.example/api/v1/webhooks/github"},
                 "updated_at": "2019-05-15T15:20:49Z", "created_at": "2019-05-15T15:20:49Z",
                 "url": "https://api.github.com/orgs/Octocoders/hooks/12345",
                 "ping_url": "https://api.github.com/orgs/Octocoders/hooks/12345/pings"},
        "organization": {"login": "Octocoders", "id": 38302899, "url": "https://api.github.com/orgs/Octocoders"},
        "sender": {"login": "Codertocat", "id": 21031067, "type": "User"},
    }


def github_repo_ping():
    return {"zen": "Design for failure.", "hook_id": 109948940,
            "hook": {"type": "Repository", "id": 109948940, "name": "web", "active": True, "events": ["push"],
                     "config": {"content_type": "json", "url": "https://swarm.example/api/v1/webhooks/github"}},
            "repository": _github_repository(), "sender": {"login": "Codertocat", "id": 21031067}}


def signed(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_github(client, payload, *, secret=SECRET, event="push", form=False, delivery=None):
    if form:
        body, content_type = urlencode({"payload": json.dumps(payload)}).encode(), "application/x-www-form-urlencoded"
    else:
        body, content_type = json.dumps(payload).encode(), "application/json"
    return client.generic("POST", "/api/v1/webhooks/github", body, content_type=content_type,
                          HTTP_X_HUB_SIGNATURE_256=signed(body, secret), HTTP_X_GITHUB_EVENT=event,
                          HTTP_X_GITHUB_DELIVERY=delivery or str(uuid.uuid4()))


def gitlab_push(*, kind="Push Hook", ref="refs/heads/master", username="jsmith",
                after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7"):
    """GitLab's documented Push Hook / Tag Push Hook example (project mike/diaspora); `username=None` is an
    older payload that carries only `user_name`."""
    body = {
        "object_kind": "tag_push" if kind == "Tag Push Hook" else "push",
        "event_name": "tag_push" if kind == "Tag Push Hook" else "push",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": after, "ref": ref,
        "checkout_sha": None if after == "0" * 40 else after,
        "user_id": 4, "user_name": "John Smith", "user_email": "john@example.com",
        "user_avatar": "https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=8://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80",
        "project_id": 15,
        "project": {"id": 15, "name": "Diaspora", "description": "", "web_url": "http://example.com/mike/diaspora",
                    "avatar_url": None, "git_ssh_url": "git@example.com:mike/diaspora.git",
                    "git_http_url": "http://example.com/mike/diaspora.git", "namespace": "Mike",
                    "visibility_level": 0, "path_with_namespace": "mike/diaspora", "default_branch": "master",
                    "homepage": "http://example.com/mike/diaspora", "url": "git@example.com:mike/diaspora.git",
                    "ssh_url": "git@example.com:mike/diaspora.git", "http_url": "http://example.com/mike/diaspora.git"},
        "repository": {"name": "Diaspora", "url": "git@example.com:mike/diaspora.git", "description": "",
                       "homepage": "http://example.com/mike/diaspora",
                       "git_http_url": "http://example.com/mike/diaspora.git",
                       "git_ssh_url": "git@example.com:mike/diaspora.git", "visibility_level": 0},
        "commits": [], "total_commits_count": 0,
    }
    if username:
        body["user_username"] = username
    return body


def post_gitlab(client, payload, *, token=SECRET, event="Push Hook"):
    return client.generic("POST", "/api/v1/webhooks/gitlab", json.dumps(payload).encode(),
                          content_type="application/json", HTTP_X_GITLAB_TOKEN=token, HTTP_X_GITLAB_EVENT=event,
                          HTTP_X_GITLAB_EVENT_UUID=str(uuid.uuid4()))


def bitbucket_push(changes):
    return {
        "actor": {"display_name": "Emma Doe", "nickname": "emmadoe", "type": "user",
                  "uuid": "{d301aafa-d676-4ee0-88be-962be7417567}", "account_id": "557058:c0b72ad0"},
        "repository": {"type": "repository", "full_name": "Acme-Team/Hello-Repo", "name": "Hello-Repo",
                       "workspace": {"slug": "acme-team", "type": "workspace"},
                       "links": {"html": {"href": "https://bitbucket.org/Acme-Team/Hello-Repo"}},
                       "uuid": "{9f9c6a0f-9e12-4f0c-8d0e-0bd7b1e6b0c2}"},
        "push": {"changes": changes},
    }


def post_bitbucket(client, payload, *, secret=SECRET):
    body = json.dumps(payload).encode()
    return client.generic("POST", "/api/v1/webhooks/bitbucket", body, content_type="application/json",
                          HTTP_X_HUB_SIGNATURE=signed(body, secret), HTTP_X_EVENT_KEY="repo:push",
                          HTTP_X_REQUEST_UUID=str(uuid.uuid4()))


def process_all():
    for delivery in WebhookDelivery.objects.filter(status="received"):
        process_webhook_delivery(delivery.pk)


@pytest.fixture
def hello_world(db):
    """A job whose URL was typed in another case than GitHub shows it."""
    return make_job(name="hello", scm_url="https://github.com/codertocat/hello-world", webhook_secret=SECRET)


# --- identity -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://github.com/Codertocat/Hello-World", "https://GitHub.com/codertocat/hello-world.git",
    "git@github.com:CODERTOCAT/Hello-World.git", "ssh://git@github.com/Codertocat/Hello-World/",
    "https://user:token@github.com/Codertocat/Hello-World.git/", "git://github.com/Codertocat/Hello-World.git",
])
def test_every_form_of_one_github_repository_is_one_identity(url):
    assert normalize_scm_url(url) == "github.com/codertocat/hello-world"


def test_bitbucket_is_case_insensitive_and_other_hosts_keep_the_path_case():
    assert normalize_scm_url("git@bitbucket.org:Acme-Team/Hello-Repo.git") == "bitbucket.org/acme-team/hello-repo"
    assert normalize_scm_url("https://Example.com/Mike/Diaspora.git/") == "example.com/Mike/Diaspora"
    assert normalize_scm_url("git@example.com:Mike/Diaspora") == "example.com/Mike/Diaspora"


# --- GitHub -------------------------------------------------------------------------------


def test_a_mixed_case_job_url_builds_githubs_push(anonymous_api, hello_world):
    response = post_github(anonymous_api, github_push())
    assert response.status_code == 202 and response.json()["status"] == "received"
    process_all()
    build = Build.objects.get()
    assert (build.job, build.branch, build.triggered_by) == (hello_world, "master", "github:Codertocat")


def test_a_form_encoded_github_delivery_is_verified_on_the_raw_body(anonymous_api, hello_world):
    response = post_github(anonymous_api, github_push(), form=True)
    assert response.status_code == 202
    process_all()
    assert Build.objects.count() == 1
    forged = post_github(anonymous_api, github_push(), form=True, secret="wrong")
    assert forged.status_code == 401 and forged.json()["error"] == "bad_signature"
    body = urlencode({"not_payload": "{}"}).encode()
    response = anonymous_api.generic("POST", "/api/v1/webhooks/github", body,
                                     content_type="application/x-www-form-urlencoded",
                                     HTTP_X_HUB_SIGNATURE_256=signed(body, SECRET), HTTP_X_GITHUB_EVENT="push",
                                     HTTP_X_GITHUB_DELIVERY="no-payload")
    assert response.status_code == 400 and response.json()["field"] == "payload"
    assert WebhookDelivery.objects.count() == 1


def test_a_repository_hook_ping_is_a_pong_ignored_at_once(anonymous_api, hello_world):
    response = post_github(anonymous_api, github_repo_ping(), event="ping")
    assert response.status_code == 200
    assert response.json()["status"] == "ignored" and response.json()["detail"].startswith("pong")
    assert WebhookDelivery.objects.get().status == "ignored"
    assert post_github(anonymous_api, github_repo_ping(), event="ping", secret="wrong").status_code == 401


def test_an_organisation_hook_ping_is_verified_with_the_namespace_secret(anonymous_api, db):
    row = WebhookNamespaceSecret(provider="github", namespace="octocoders")
    row.secret = ORG_SECRET
    row.save()
    assert ORG_SECRET not in WebhookNamespaceSecret.objects.values_list("secret_encrypted", flat=True).get()
    response = post_github(anonymous_api, github_org_ping(), event="ping", secret=ORG_SECRET)
    assert response.status_code == 200 and response.json()["detail"] == (
        "pong: organization ping verified with namespace octocoders")
    assert post_github(anonymous_api, github_org_ping(), event="ping", secret=SECRET).status_code == 401


def test_an_organisation_ping_with_the_global_secret_is_a_pong(anonymous_api, db, settings):
    settings.SWARM_WEBHOOK_SECRET = SECRET
    response = post_github(anonymous_api, github_org_ping(), event="ping")
    assert response.status_code == 200 and response.json()["detail"].startswith("pong")


def test_an_org_secret_builds_the_jobs_without_a_secret_of_their_own(anonymous_api, db):
    row = WebhookNamespaceSecret(provider="github", namespace="Codertocat")
    row.secret = ORG_SECRET
    row.save()
    open_job = make_job(name="open", scm_url="git@github.com:Codertocat/Hello-World.git")
    make_job(name="own", scm_url="https://github.com/Codertocat/Hello-World", webhook_secret="its own")
    assert post_github(anonymous_api, github_push(), secret=ORG_SECRET).status_code == 202
    process_all()
    assert list(Build.objects.values_list("job", flat=True)) == [open_job.pk]


def test_a_push_no_job_watches(anonymous_api, db, settings):
    response = post_github(anonymous_api, github_push())
    # Nothing could verify it: a stranger learns only that nothing here watches it; nothing is stored.
    assert response.status_code == 404 and response.json()["error"] == "no_job"
    assert "github.com/codertocat/hello-world" in response.json()["detail"]
    settings.SWARM_WEBHOOK_SECRET = SECRET
    verified = post_github(anonymous_api, github_push())
    assert verified.status_code == 200
    assert verified.json()["detail"] == "no job watches this repository: ignored"
    assert post_github(anonymous_api, github_push(), secret="wrong").status_code == 401
    assert WebhookDelivery.objects.count() == 1


def test_a_disabled_job_is_ignored_at_once_and_says_so(anonymous_api, hello_world):
    job_update(job=hello_world, enabled=False)
    response = post_github(anonymous_api, github_push())
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["detail"]) == ("ignored", "job disabled: ignored")
    assert not Build.objects.exists()


def test_non_push_events_are_ignored_at_once(anonymous_api, hello_world):
    response = post_github(anonymous_api, {"action": "opened", "repository": _github_repository()}, event="issues")
    assert response.status_code == 200 and response.json()["detail"] == "event issues is not a push: ignored"


def test_tags_build_or_are_ignored_per_job_and_deletions_say_so(anonymous_api, hello_world):
    tag = github_push(ref="refs/tags/simple-tag", after="a" * 40, head_commit_id="b" * 40)
    post_github(anonymous_api, tag)
    process_all()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "ignored" and "tag simple-tag: ignored (job hello does not build tags)" in delivery.detail
    job_update(job=hello_world, build_tags=True)
    post_github(anonymous_api, tag)
    process_all()
    build = Build.objects.get()
    assert (build.branch, build.commit_sha, build.params) == ("simple-tag", "b" * 40, {"SWARM_GIT_TAG": "simple-tag"})
    # GitHub's documented push example is this: a tag deleted.
    deleted = post_github(anonymous_api, github_push(ref="refs/tags/simple-tag", deleted=True))
    assert deleted.status_code == 200 and deleted.json()["detail"] == "tag simple-tag deleted: ignored"
    branch_gone = post_github(anonymous_api, github_push(ref="refs/heads/feature", deleted=True))
    assert branch_gone.json()["detail"] == "branch feature deleted: ignored"
    assert Build.objects.count() == 1


# --- GitLab and Bitbucket -----------------------------------------------------------------


@pytest.fixture
def diaspora(db):
    return make_job(name="diaspora", scm_url="git@example.com:mike/diaspora.git", webhook_secret=SECRET)


def test_gitlab_triggered_by_the_username_else_the_name_of_older_payloads(anonymous_api, diaspora):
    assert post_gitlab(anonymous_api, gitlab_push()).status_code == 202
    assert post_gitlab(anonymous_api, gitlab_push(username=None, after="c" * 40)).status_code == 202
    process_all()
    assert sorted(Build.objects.values_list("triggered_by", flat=True)) == ["gitlab:John Smith", "gitlab:jsmith"]


def test_gitlab_tag_push_hook_and_its_deletion(anonymous_api, diaspora):
    job_update(job=diaspora, build_tags=True)
    tag = gitlab_push(kind="Tag Push Hook", ref="refs/tags/v1.0.0", username=None,
                      after="82b3d5ae55f7080f1e6022629cdb57bfae7cccc7")
    assert post_gitlab(anonymous_api, tag, event="Tag Push Hook").status_code == 202
    process_all()
    assert Build.objects.get().branch == "v1.0.0"
    gone = gitlab_push(kind="Tag Push Hook", ref="refs/tags/v1.0.0", after="0" * 40)
    response = post_gitlab(anonymous_api, gone, event="Tag Push Hook")
    assert response.status_code == 200 and response.json()["detail"] == "tag v1.0.0 deleted: ignored"


def test_a_gitlab_group_secret_verifies_a_subgroup_project(anonymous_api, db):
    row = WebhookNamespaceSecret(provider="gitlab", namespace="Mike")
    row.secret = ORG_SECRET
    row.save()
    job = make_job(name="deep", scm_url="http://example.com/mike/platform/diaspora.git")
    payload = gitlab_push()
    payload["project"].update(path_with_namespace="mike/platform/diaspora",
                              git_http_url="http://example.com/mike/platform/diaspora.git")
    assert post_gitlab(anonymous_api, payload, token=ORG_SECRET).status_code == 202
    process_all()
    assert Build.objects.get().job == job


def test_bitbucket_push_tag_and_deletion_with_the_actor(anonymous_api, db):
    job = make_job(name="hello-repo", scm_url="git@bitbucket.org:acme-team/hello-repo.git", webhook_secret=SECRET,
                   build_tags=True)
    changes = [
        {"new": {"type": "branch", "name": "main", "target": {"type": "commit", "hash": "d" * 40}},
         "old": {"type": "branch", "name": "main", "target": {"type": "commit", "hash": "e" * 40}},
         "created": False, "closed": False, "forced": False},
        {"new": {"type": "tag", "name": "v2", "target": {"type": "commit", "hash": "f" * 40}}, "old": None,
         "created": True, "closed": False},
        {"new": None, "old": {"type": "branch", "name": "old-feature", "target": {"hash": "1" * 40}},
         "created": False, "closed": True},
    ]
    assert post_bitbucket(anonymous_api, bitbucket_push(changes)).status_code == 202
    process_all()
    builds = sorted(Build.objects.filter(job=job).values_list("branch", "triggered_by"))
    assert builds == [("main", "bitbucket:emmadoe"), ("v2", "bitbucket:emmadoe")]
    assert "branch old-feature deleted: ignored" in WebhookDelivery.objects.get().detail
