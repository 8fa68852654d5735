"""Forge push webhooks: each provider's signature scheme checked on the raw body, the delivery recorded, then a task.

* GitHub:    `X-Hub-Signature-256: sha256=<HMAC-SHA256(secret, body)>`, delivery `X-GitHub-Delivery`,
             event `X-GitHub-Event: push` (or `ping`); body `application/json`, or
             `application/x-www-form-urlencoded` with the JSON in `payload=` (signed as sent, encoded).
* GitLab:    `X-Gitlab-Token: <secret>` (compared in constant time), delivery `X-Gitlab-Event-UUID`,
             event `X-Gitlab-Event: Push Hook` or `Tag Push Hook`.
* Bitbucket: `X-Hub-Signature: sha256=<HMAC-SHA256(secret, body)>`, delivery `X-Request-UUID`,
             event `X-Event-Key: repo:push`.

The secrets that may have signed a delivery: the `webhook_secret` of every job
on the named repository (enabled or not; stored encrypted, decrypted here for
those candidates only), the namespace secrets of the repository's owner
(`WebhookNamespaceSecret`: a GitHub organisation hook, a GitLab group hook, a
Bitbucket workspace hook), and the global SWARM_WEBHOOK_SECRET. The answer
tells the forge's delivery log the truth:

* no secret could apply (no job watches the repository, no namespace or global
  secret) → 404 `no_job`, nothing checked or stored: the caller, who cannot
  be told apart from a stranger, learns only that nothing here watches it;
* some secret could apply but none verifies → 401 `bad_signature`, nothing stored;
* verified → recorded once per (provider, delivery id) (a replay is a 200
  that queues nothing) and answered with what becomes of it: a ping is
  `ignored` with a `pong` detail, a non-push event, a deletion, a repository
  no job watches and a disabled job are `ignored` at once with the reason;
  a push a job may build is `received` (202) and a task queues its builds.

A job with its own secret builds only from deliveries signed with it; the
namespace and global secrets build the jobs that have none. A job whose
stored secret no key decrypts verifies nothing (an error is logged naming it).
The body is read by the strict input layer, and a pushed branch, tag or commit
id that git's ref rules refuse (`builds.config.branch_name_problem`) builds
nothing: the delivery records why, and the name never reaches `git`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from builds import tasks
from builds.choices import DeliveryStatus, TriggerKind, WebhookProvider
from builds.config import branch_matches, branch_name_problem, commit_sha_problem
from builds.forge_payloads import PING_EVENTS, PUSH_EVENTS, TAG, PushEvent, namespaces, parse_push_events, \
    repository_urls
from builds.models import Job, WebhookDelivery, WebhookNamespaceSecret
from builds.services.lifecycle import build_trigger
from swarm.core.errors import ApiError, NotFound
from swarm.core.inputs import json_loads
from swarm.core.secret_box import SecretUndecryptable
from tenancy.quotas import QuotaExceeded

logger = logging.getLogger(__name__)

__all__ = ["PushEvent", "WebhookUnauthorized", "parse_push_events", "webhook_delivery_process", "webhook_receive"]


class WebhookUnauthorized(ApiError):
    status_code = 401
    code = "bad_signature"


@dataclass
class Verification:
    """Which of the secrets that could apply to a delivery signed it."""

    job_ids: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    global_secret: bool = False

    @property
    def any(self) -> bool:
        return bool(self.job_ids or self.namespaces or self.global_secret)

    def allows(self, job: Job) -> bool:
        """Whether this delivery may build `job`: its own secret signed it, or it has none and a shared one did."""
        if job.pk in self.job_ids:
            return True
        return not job.webhook_secret_encrypted and (self.global_secret or bool(self.namespaces))

    def stored(self) -> dict:
        return {"verified_job_ids": self.job_ids, "namespaces": self.namespaces, "global_secret": self.global_secret}

    @classmethod
    def from_stored(cls, payload: dict) -> Verification:
        return cls(job_ids=list(payload.get("verified_job_ids") or []),
                   namespaces=list(payload.get("namespaces") or []),
                   global_secret=bool(payload.get("global_secret")))

    def describe(self) -> str:
        names = [f"job {pk}" for pk in self.job_ids] + [f"namespace {name}" for name in self.namespaces]
        if self.global_secret:
            names.append("the global secret")
        return ", ".join(names)


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


def _json_text(provider: str, headers, raw_body: bytes) -> bytes:
    """The JSON text of the body: the body itself, or GitHub's form field `payload` (the signature covers the
    body as sent either way)."""
    media_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return raw_body or b"{}"
    if media_type == "application/x-www-form-urlencoded" and provider == WebhookProvider.GITHUB:
        try:
            form = parse_qs(raw_body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            form = {}
        values = form.get("payload")
        if not values or len(values) != 1:
            raise ApiError("A form-encoded GitHub delivery carries its JSON in one 'payload' field.",
                           code="invalid_form", field="payload")
        return values[0].encode()
    accepted = "application/json or application/x-www-form-urlencoded" if provider == WebhookProvider.GITHUB \
        else "application/json"
    raise ApiError(f"A webhook body is JSON; set the webhook's content type to {accepted} "
                   f"(got {media_type[:60] or 'none'!r}).", code="unsupported_media_type", status_code=415)


def _jobs_for_urls(urls, *, enabled_only: bool) -> list[Job]:
    if not urls:
        return []
    jobs = Job.objects.filter(scm_url_normalized__in=list(urls))
    return list(jobs.filter(enabled=True) if enabled_only else jobs)


def _namespace_secrets(provider: str, names: list[str]) -> list[WebhookNamespaceSecret]:
    if not names:
        return []
    return list(WebhookNamespaceSecret.objects.annotate(key=Lower("namespace"))
                .filter(provider=provider, key__in=names))


def _stored_secret_ok(provider: str, headers, raw_body: bytes, row, attribute: str, label: str) -> bool:
    """Whether the delivery is signed with a stored (encrypted) secret; False when it cannot be decrypted."""
    try:
        secret = getattr(row, attribute)
    except SecretUndecryptable as error:
        logger.error("webhook cannot be verified with the secret of %s: %s", label, error)
        return False
    return _signature_ok(provider, headers, raw_body, secret)


def _verify(provider: str, headers, raw_body: bytes, payload) -> tuple[Verification, list[Job], bool]:
    """Check the delivery against every secret that could apply: (what verified, the jobs on the repository,
    whether any secret could apply at all)."""
    urls = repository_urls(provider, payload) if isinstance(payload, dict) else []
    owners = namespaces(provider, payload) if isinstance(payload, dict) else []
    jobs = _jobs_for_urls(urls, enabled_only=False)
    namespace_rows = _namespace_secrets(provider, owners)
    global_secret = settings.SWARM_WEBHOOK_SECRET
    verification = Verification(
        job_ids=[job.pk for job in jobs if job.webhook_secret_encrypted and _stored_secret_ok(
            provider, headers, raw_body, job, "webhook_secret", f"job {job.pk}")],
        namespaces=sorted(row.namespace.lower() for row in namespace_rows if _stored_secret_ok(
            provider, headers, raw_body, row, "secret", f"namespace {row}")),
        global_secret=_signature_ok(provider, headers, raw_body, global_secret),
    )
    return verification, jobs, bool(global_secret or namespace_rows or jobs)


def _nothing_watches(provider: str, payload) -> NotFound:
    urls = repository_urls(provider, payload) if isinstance(payload, dict) else []
    what = f"repository {urls[0]}" if urls else "the repository or organisation of this delivery"
    return NotFound(f"No job watches {what}, and no namespace or global webhook secret is configured that could "
                    "verify it; nothing was checked or stored. Create a job for the repository (or a namespace "
                    "secret for an organisation hook).", code="no_job")


def _outcome(provider: str, event: str, payload: dict, verification: Verification,
             jobs: list[Job]) -> tuple[str, str]:
    """What becomes of a verified delivery, known before any task runs: (status, detail)."""
    if event in PING_EVENTS.get(provider, ()):
        hook = payload.get("hook") if isinstance(payload.get("hook"), dict) else {}
        kind = hook.get("type") if isinstance(hook.get("type"), str) else "hook"
        return DeliveryStatus.IGNORED, f"pong: {kind.lower()} ping verified with {verification.describe()}"
    if event not in PUSH_EVENTS.get(provider, ()):
        return DeliveryStatus.IGNORED, f"event {event or '?'} is not a push: ignored"
    pushes = parse_push_events(provider=provider, event=event, payload=payload)
    if not pushes:
        return DeliveryStatus.IGNORED, "the push updates no branch or tag: ignored"
    if all(push.deleted for push in pushes):
        return DeliveryStatus.IGNORED, "; ".join(f"{p.ref_type} {p.name[:60]} deleted: ignored" for p in pushes)
    if not jobs:
        return DeliveryStatus.IGNORED, "no job watches this repository: ignored"
    allowed = [job for job in jobs if verification.allows(job)]
    if not allowed:
        return DeliveryStatus.IGNORED, ("every job on this repository has its own webhook secret, and this "
                                        "delivery is not signed with one of them: ignored")
    if not any(job.enabled for job in allowed):
        return DeliveryStatus.IGNORED, "job disabled: ignored"
    return DeliveryStatus.RECEIVED, ""


def webhook_receive(*, provider: str, headers, raw_body: bytes) -> tuple[WebhookDelivery, bool]:
    """Verify and record a delivery; returns it and whether it is new (a task then processes a push)."""
    if provider not in WebhookProvider.values:
        raise NotFound(f"No webhook endpoint for {provider!r}; use github, gitlab or bitbucket.")
    json_text = _json_text(provider, headers, raw_body)
    parse_error = None
    try:
        payload = json_loads(json_text)
    except ApiError as error:
        payload, parse_error = None, error
        if error.code == "invalid_text":
            # It parsed (within the depth limit); read it again only to find the secrets that may
            # have signed it, so a signed body is told what is wrong and an unsigned one is still a 401.
            payload = json.loads(json_text)
    verification, jobs, could_apply = _verify(provider, headers, raw_body, payload)
    if not verification.any:
        if not could_apply:
            raise _nothing_watches(provider, payload)
        if not any(job.webhook_secret_encrypted for job in jobs) and not settings.SWARM_WEBHOOK_SECRET \
                and not _namespace_secrets(provider, namespaces(provider, payload)):
            raise WebhookUnauthorized("No webhook secret is configured for the jobs on this repository: set the "
                                      "job's webhook secret, a namespace secret or SWARM_WEBHOOK_SECRET.")
        raise WebhookUnauthorized("The webhook signature is missing or does not match a configured secret.")
    if parse_error is not None and parse_error.code != "parse_error":
        raise parse_error  # too deep, or text no column can store: the error names the JSON path
    if parse_error is not None or not isinstance(payload, dict):
        raise ApiError("The webhook body is not a JSON object.", code="invalid_json")
    delivery_id = _delivery_id(provider, headers)
    event = _event_name(provider, headers)
    status, detail = _outcome(provider, event, payload, verification, jobs)
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                provider=provider, delivery_id=delivery_id, event=event, status=status, detail=detail[:500],
                payload={"body": payload, **verification.stored()},
                processed_at=None if status == DeliveryStatus.RECEIVED else timezone.now(),
            )
            if status == DeliveryStatus.RECEIVED:
                delivery_pk = delivery.pk
                transaction.on_commit(lambda: tasks.process_webhook_delivery.delay(delivery_pk))
    except IntegrityError:
        return WebhookDelivery.objects.get(provider=provider, delivery_id=delivery_id), False
    return delivery, True


def _push_problem(push: PushEvent) -> str | None:
    """Why a push builds nothing because of what it names (a ref or commit git would refuse), or None."""
    problem = branch_name_problem(push.name)
    if problem:
        return f"{push.ref_type} {push.name[:60]!r} refused: {problem}"
    if push.commit_sha and commit_sha_problem(push.commit_sha):
        return f"commit {push.commit_sha[:70]!r} on {push.name} refused: {commit_sha_problem(push.commit_sha)}"
    return None


def _build_push(*, delivery: WebhookDelivery, push: PushEvent, verification: Verification, build_ids: list[int],
                notes: list[str]) -> None:
    """Queue the builds one verified ref update asks for; note why a job builds nothing."""
    triggered_by = f"{delivery.provider}:{push.pusher}"[:200]
    for job in _jobs_for_urls(push.repository_urls, enabled_only=True):
        if not verification.allows(job):
            continue
        if push.ref_type == TAG:
            if not job.build_tags:
                notes.append(f"tag {push.name[:60]}: ignored (job {job.name} does not build tags)")
                continue
            extra = {"params": {"SWARM_GIT_TAG": push.name}}
        elif not branch_matches(job.branch_filter, push.name):
            continue
        else:
            extra = {}
        try:
            build = build_trigger(job=job, trigger=TriggerKind.WEBHOOK, triggered_by=triggered_by,
                                  branch=push.name, commit_sha=push.commit_sha, **extra)
        except QuotaExceeded as refused:  # kept on the delivery's row: never a silent drop
            notes.append(f"job {job.name[:60]}: {refused.detail}")
            continue
        if push.ref_type == TAG:
            notes.append(f"tag {push.name[:60]}: build {build.pk} of job {job.name}")
        build_ids.append(build.pk)


def webhook_delivery_process(*, delivery_id: int) -> WebhookDelivery | None:
    """Queue builds for the pushes of one delivery; runs once whatever the redeliveries."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
            return delivery
        body = delivery.payload.get("body") or {}
        verification = Verification.from_stored(delivery.payload)
        pushes = parse_push_events(provider=delivery.provider, event=delivery.event, payload=body)
        build_ids: list[int] = []
        notes: list[str] = []
        for push in pushes:
            if push.deleted:
                notes.append(f"{push.ref_type} {push.name[:60]} deleted: ignored")
                continue
            problem = _push_problem(push)
            if problem:
                notes.append(problem)
                continue
            _build_push(delivery=delivery, push=push, verification=verification, build_ids=build_ids, notes=notes)
        delivery.build_ids = build_ids
        delivery.status = DeliveryStatus.PROCESSED if build_ids else DeliveryStatus.IGNORED
        if not pushes:
            notes.append(f"event {delivery.event or '?'} carries no branch or tag push")
        elif not build_ids and not notes:
            notes.append("no enabled job matches this repository and branch")
        delivery.detail = "; ".join(notes)[:500]
        delivery.processed_at = timezone.now()
        delivery.save(update_fields=["build_ids", "status", "detail", "processed_at"])
    return delivery
