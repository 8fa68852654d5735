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
from builds.config import branch_matches, normalize_scm_url
from builds.models import Job, WebhookDelivery
from builds.services.lifecycle import build_trigger
from swarm.core.errors import ApiError, NotFound
from swarm.core.secret_box import SecretUndecryptable

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
        repo = payload.get("repository") or {}
        urls = [repo.get(k) for k in ("clone_url", "ssh_url", "git_url", "html_url", "url", "svn_url")]
    elif provider == WebhookProvider.GITLAB:
        project = payload.get("project") or {}
        repo = payload.get("repository") or {}
        urls = [project.get(k) for k in ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url")]
        urls += [repo.get(k) for k in ("git_http_url", "git_ssh_url", "homepage", "url")]
    elif provider == WebhookProvider.BITBUCKET:
        repo = payload.get("repository") or {}
        links = repo.get("links") or {}
        html = (links.get("html") or {}).get("href") if isinstance(links.get("html"), dict) else None
        urls = [html]
        for clone in links.get("clone") or []:
            if isinstance(clone, dict):
                urls.append(clone.get("href"))
        if repo.get("full_name"):
            urls.append(f"https://bitbucket.org/{repo['full_name']}")
    return sorted({normalize_scm_url(u) for u in urls if isinstance(u, str) and u})


def parse_push_events(*, provider: str, event: str, payload: dict) -> list[PushEvent]:
    """The branch updates a push payload describes (tags and other events give none)."""
    urls = tuple(_repository_urls(provider, payload))
    pushes: list[PushEvent] = []
    if provider == WebhookProvider.GITHUB and event == "push":
        ref = payload.get("ref") or ""
        if ref.startswith("refs/heads/"):
            after = payload.get("after") or ""
            deleted = bool(payload.get("deleted")) or after == ZERO_SHA
            pusher = (payload.get("pusher") or {}).get("name") or (payload.get("sender") or {}).get("login") or ""
            pushes.append(PushEvent(urls, ref[len("refs/heads/"):], "" if deleted else after, deleted, pusher))
    elif provider == WebhookProvider.GITLAB and event == "Push Hook":
        ref = payload.get("ref") or ""
        if ref.startswith("refs/heads/"):
            after = payload.get("after") or ""
            deleted = after == ZERO_SHA or payload.get("checkout_sha") is None and after == ZERO_SHA
            pushes.append(PushEvent(urls, ref[len("refs/heads/"):], "" if deleted else
                                    (payload.get("checkout_sha") or after), deleted, payload.get("user_username") or ""))
    elif provider == WebhookProvider.BITBUCKET and event == "repo:push":
        actor = (payload.get("actor") or {}).get("display_name") or ""
        for change in ((payload.get("push") or {}).get("changes") or []):
            new, old = change.get("new"), change.get("old")
            target = new or old or {}
            if target.get("type") not in ("branch", "named_branch"):
                continue
            if new is None:
                pushes.append(PushEvent(urls, old.get("name", ""), "", True, actor))
            else:
                pushes.append(PushEvent(urls, new.get("name", ""), (new.get("target") or {}).get("hash", ""), False,
                                        actor))
    return pushes


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
    try:
        payload = json.loads(raw_body or b"{}")
    except (ValueError, UnicodeDecodeError):
        payload = None
    candidate_jobs = _jobs_for_urls(_repository_urls(provider, payload)) if isinstance(payload, dict) else []
    verified_job_ids = [job.pk for job in candidate_jobs if _job_signature_ok(provider, headers, raw_body, job)]
    global_ok = _signature_ok(provider, headers, raw_body, settings.SWARM_WEBHOOK_SECRET)
    if not verified_job_ids and not global_ok:
        raise WebhookUnauthorized("The webhook signature is missing or does not match a configured secret.")
    if not isinstance(payload, dict):
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
                notes.append(f"branch {push.branch} deleted: ignored")
                continue
            for job in _jobs_for_urls(push.repository_urls):
                allowed = job.pk in verified or (global_ok and not job.webhook_secret_encrypted)
                if not allowed or not branch_matches(job.branch_filter, push.branch):
                    continue
                build = build_trigger(job=job, trigger=TriggerKind.WEBHOOK,
                                      triggered_by=f"{delivery.provider}:{push.pusher}"[:200],
                                      branch=push.branch, commit_sha=push.commit_sha)
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
