"""Forge push webhooks: each provider's signature scheme checked on the raw body, the delivery recorded, then a task.

* GitHub:    `X-Hub-Signature-256: sha256=<HMAC-SHA256(secret, body)>`, delivery `X-GitHub-Delivery`,
             event `X-GitHub-Event: push`.
* GitLab:    `X-Gitlab-Token: <secret>` (compared in constant time), delivery `X-Gitlab-Event-UUID`,
             event `X-Gitlab-Event: Push Hook`.
* Bitbucket: `X-Hub-Signature: sha256=<HMAC-SHA256(secret, body)>`, delivery `X-Request-UUID`,
             event `X-Event-Key: repo:push`.

The secret is the job's `webhook_secret` (jobs on the pushed repository;
stored encrypted, decrypted here for the candidates only) or the global
SWARM_WEBHOOK_SECRET. A job whose stored secret no key decrypts verifies
nothing (an error is logged naming it), so its pushes build nothing until the
key is restored or the secret entered again. A delivery is stored once per (provider,
delivery id), so a replay is answered 200 and queues nothing; a bad or
missing signature is a 401 and stores nothing.

The body is read by the strict input layer (no NUL, lone surrogate or
hostile nesting reaches the database), and a pushed branch or commit id that
git's ref rules refuse (`builds.config.branch_name_problem`) builds nothing:
the delivery records why, and the name never reaches `git`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from builds import tasks
from builds.choices import DeliveryStatus, TriggerKind, WebhookProvider
from builds.config import branch_matches, branch_name_problem, commit_sha_problem, normalize_scm_url
from builds.models import Job, WebhookDelivery
from builds.services.lifecycle import build_trigger
from swarm.core.errors import ApiError, NotFound
from swarm.core.inputs import json_loads, text_problem
from swarm.core.secret_box import SecretUndecryptable
from tenancy.quotas import QuotaExceeded

logger = logging.getLogger(__name__)

ZERO_SHA = "0" * 40


class WebhookUnauthorized(ApiError):
    status_code = 401
    code = "bad_signature"


@dataclass(frozen=True)
class PushEvent:
    """One branch update from a push payload."""

    repository_urls: tuple[str, ...]
    branch: str
    commit_sha: str
    deleted: bool
    pusher: str


def _text(value) -> str:
    """A payload value that should be a string, or "" when it is anything else."""
    return value if isinstance(value, str) else ""


def _object(value) -> dict:
    """A payload value that should be an object, or {} when it is anything else."""
    return value if isinstance(value, dict) else {}


def _hmac_sha256(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _signature_ok(provider: str, headers, raw_body: bytes, secret: str) -> bool:
    if not secret:
        return False
    if provider == WebhookProvider.GITLAB:
        return hmac.compare_digest(headers.get("X-Gitlab-Token", "").encode(), secret.encode())
    header = "X-Hub-Signature-256" if provider == WebhookProvider.GITHUB else "X-Hub-Signature"
    presented = headers.get(header, "")
    algorithm, _, digest = presented.partition("=")
    if algorithm != "sha256" or not digest:
        return False
    return hmac.compare_digest(digest.strip().lower().encode(), _hmac_sha256(secret, raw_body).encode())


def _delivery_id(provider: str, headers) -> str:
    name = {WebhookProvider.GITHUB: "X-GitHub-Delivery", WebhookProvider.GITLAB: "X-Gitlab-Event-UUID",
            WebhookProvider.BITBUCKET: "X-Request-UUID"}[provider]
    value = headers.get(name, "").strip()
    if not value and provider == WebhookProvider.GITLAB:
        value = headers.get("X-Gitlab-Webhook-UUID", "").strip()
    if not value:
        raise ApiError(f"{name}: the delivery id header is required", code="missing_field", field=name)
    return value[:200]


def _event_name(provider: str, headers) -> str:
    name = {WebhookProvider.GITHUB: "X-GitHub-Event", WebhookProvider.GITLAB: "X-Gitlab-Event",
            WebhookProvider.BITBUCKET: "X-Event-Key"}[provider]
    return headers.get(name, "").strip()[:100]


def _repository_urls(provider: str, payload: dict) -> list[str]:
    urls: list[str] = []
    if provider == WebhookProvider.GITHUB:
        repo = _object(payload.get("repository"))
        urls = [repo.get(k) for k in ("clone_url", "ssh_url", "git_url", "html_url", "url", "svn_url")]
    elif provider == WebhookProvider.GITLAB:
        project = _object(payload.get("project"))
        repo = _object(payload.get("repository"))
        urls = [project.get(k) for k in ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url")]
        urls += [repo.get(k) for k in ("git_http_url", "git_ssh_url", "homepage", "url")]
    elif provider == WebhookProvider.BITBUCKET:
        repo = _object(payload.get("repository"))
        links = _object(repo.get("links"))
        urls = [_object(links.get("html")).get("href")]
        clones = links.get("clone")
        for clone in clones if isinstance(clones, list) else []:
            urls.append(_object(clone).get("href"))
        if _text(repo.get("full_name")):
            urls.append(f"https://bitbucket.org/{repo['full_name']}")
    # A URL no column can store matches no job (the body is refused once its signature is checked).
    return sorted({normalize_scm_url(u) for u in urls if isinstance(u, str) and u and text_problem(u) is None})


def parse_push_events(*, provider: str, event: str, payload: dict) -> list[PushEvent]:
    """The branch updates a push payload describes (tags and other events give none).

    Values of the wrong JSON type read as absent; the branch names and
    commit ids are returned as pushed, for `webhook_delivery_process` to check.
    """
    urls = tuple(_repository_urls(provider, payload))
    pushes: list[PushEvent] = []
    if provider == WebhookProvider.GITHUB and event == "push":
        ref = _text(payload.get("ref"))
        if ref.startswith("refs/heads/"):
            after = _text(payload.get("after"))
            deleted = bool(payload.get("deleted")) or after == ZERO_SHA
            pusher = _text(_object(payload.get("pusher")).get("name")) or _text(
                _object(payload.get("sender")).get("login"))
            pushes.append(PushEvent(urls, ref[len("refs/heads/"):], "" if deleted else after, deleted, pusher))
    elif provider == WebhookProvider.GITLAB and event == "Push Hook":
        ref = _text(payload.get("ref"))
        if ref.startswith("refs/heads/"):
            after = _text(payload.get("after"))
            deleted = after == ZERO_SHA
            pushes.append(PushEvent(urls, ref[len("refs/heads/"):], "" if deleted else
                                    (_text(payload.get("checkout_sha")) or after), deleted,
                                    _text(payload.get("user_username"))))
    elif provider == WebhookProvider.BITBUCKET and event == "repo:push":
        actor = _text(_object(payload.get("actor")).get("display_name"))
        changes = _object(payload.get("push")).get("changes")
        for change in changes if isinstance(changes, list) else []:
            change = _object(change)
            new, old = change.get("new"), change.get("old")
            target = _object(new or old)
            if target.get("type") not in ("branch", "named_branch"):
                continue
            if not isinstance(new, dict):
                pushes.append(PushEvent(urls, _text(target.get("name")), "", True, actor))
            else:
                pushes.append(PushEvent(urls, _text(new.get("name")), _text(_object(new.get("target")).get("hash")),
                                        False, actor))
    return pushes


def _push_problem(push: PushEvent) -> str | None:
    """Why a push builds nothing because of what it names (a branch or commit git would refuse), or None."""
    problem = branch_name_problem(push.branch)
    if problem:
        return f"branch {push.branch[:60]!r} refused: {problem}"
    if push.commit_sha and commit_sha_problem(push.commit_sha):
        return f"commit {push.commit_sha[:70]!r} on {push.branch} refused: {commit_sha_problem(push.commit_sha)}"
    return None


def _jobs_for_urls(urls) -> list[Job]:
    if not urls:
        return []
    return list(Job.objects.filter(enabled=True, scm_url_normalized__in=list(urls)))


def _job_signature_ok(provider: str, headers, raw_body: bytes, job: Job) -> bool:
    """Whether the delivery is signed with this job's own webhook secret (False when it has none)."""
    if not job.webhook_secret_encrypted:
        return False
    try:
        secret = job.webhook_secret
    except SecretUndecryptable as error:
        logger.error("webhook for job %s cannot be verified with its own secret: %s", job.pk, error)
        return False
    return _signature_ok(provider, headers, raw_body, secret)


def webhook_receive(*, provider: str, headers, raw_body: bytes) -> tuple[WebhookDelivery, bool]:
    """Verify and record a delivery; returns it and whether it is new (a task then processes it)."""
    if provider not in WebhookProvider.values:
        raise NotFound(f"No webhook endpoint for {provider!r}; use github, gitlab or bitbucket.")
    media_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(f"A webhook body is JSON; set the webhook's content type to application/json "
                       f"(got {media_type[:60] or 'none'!r}).", code="unsupported_media_type", status_code=415)
    parse_error = None
    try:
        payload = json_loads(raw_body or b"{}")
    except ApiError as error:
        payload, parse_error = None, error
        if error.code == "invalid_text":
            # It parsed (within the depth limit); read it again only to find the jobs whose secret may
            # have signed it, so a signed body is told what is wrong and an unsigned one is still a 401.
            payload = json.loads(raw_body)
    candidate_jobs = _jobs_for_urls(_repository_urls(provider, payload)) if isinstance(payload, dict) else []
    verified_job_ids = [job.pk for job in candidate_jobs if _job_signature_ok(provider, headers, raw_body, job)]
    global_ok = _signature_ok(provider, headers, raw_body, settings.SWARM_WEBHOOK_SECRET)
    if not verified_job_ids and not global_ok:
        raise WebhookUnauthorized("The webhook signature is missing or does not match a configured secret.")
    if parse_error is not None and parse_error.code != "parse_error":
        raise parse_error  # too deep, or text no column can store: the error names the JSON path
    if parse_error is not None or not isinstance(payload, dict):
        raise ApiError("The webhook body is not a JSON object.", code="invalid_json")
    delivery_id = _delivery_id(provider, headers)
    event = _event_name(provider, headers)
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                provider=provider, delivery_id=delivery_id, event=event,
                payload={"body": payload, "verified_job_ids": verified_job_ids, "global_secret": global_ok},
            )
            delivery_pk = delivery.pk
            transaction.on_commit(lambda: tasks.process_webhook_delivery.delay(delivery_pk))
    except IntegrityError:
        return WebhookDelivery.objects.get(provider=provider, delivery_id=delivery_id), False
    return delivery, True


def webhook_delivery_process(*, delivery_id: int) -> WebhookDelivery | None:
    """Queue builds for the pushes of one delivery; runs once whatever the redeliveries."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
            return delivery
        body = delivery.payload.get("body") or {}
        verified = set(delivery.payload.get("verified_job_ids") or [])
        global_ok = bool(delivery.payload.get("global_secret"))
        pushes = parse_push_events(provider=delivery.provider, event=delivery.event, payload=body)
        build_ids: list[int] = []
        notes: list[str] = []
        for push in pushes:
            if push.deleted:
                notes.append(f"branch {push.branch[:60]} deleted: ignored")
                continue
            problem = _push_problem(push)
            if problem:
                notes.append(problem)
                continue
            for job in _jobs_for_urls(push.repository_urls):
                allowed = job.pk in verified or (global_ok and not job.webhook_secret_encrypted)
                if not allowed or not branch_matches(job.branch_filter, push.branch):
                    continue
                try:
                    build = build_trigger(job=job, trigger=TriggerKind.WEBHOOK,
                                          triggered_by=f"{delivery.provider}:{push.pusher}"[:200],
                                          branch=push.branch, commit_sha=push.commit_sha)
                except QuotaExceeded as refused:  # kept on the delivery's row: never a silent drop
                    notes.append(f"job {job.name[:60]}: {refused.detail}")
                    continue
                build_ids.append(build.pk)
        delivery.build_ids = build_ids
        delivery.status = DeliveryStatus.PROCESSED if build_ids else DeliveryStatus.IGNORED
        if not pushes:
            notes.append(f"event {delivery.event or '?'} carries no branch push")
        elif not build_ids and not notes:
            notes.append("no enabled job matches this repository and branch")
        delivery.detail = "; ".join(notes)[:500]
        delivery.processed_at = timezone.now()
        delivery.save(update_fields=["build_ids", "status", "detail", "processed_at"])
    return delivery
