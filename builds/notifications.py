"""Completion notifications per job: e-mail and a webhook (`notifications` in the build config), each sent once.

The webhook body is the build as JSON (`event`, `build`) and, alongside it,
a Slack-compatible message (`text`, the fallback every receiver shows, and
`blocks`), so one URL may be a Slack (or Mattermost, Rocket.Chat) incoming
webhook or any JSON receiver; receivers ignore the keys they do not know.

"Sent once" is a row per build × channel (`BuildNotification`), locked while
the channel is sent: a second worker running the same task waits on the row
and then finds it sent. A failed send rolls back, leaving the channel unsent.
"""
from __future__ import annotations

import json
import logging
import urllib.request

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from builds.models import Build, BuildEvent, BuildNotification

logger = logging.getLogger(__name__)

STATE_EMOJI = {"success": ":white_check_mark:", "failed": ":x:", "canceled": ":no_entry_sign:"}


def _summary(build: Build) -> str:
    reason = f" ({build.failure_reason})" if build.failure_reason else ""
    where = f" on {build.branch}" if build.branch else ""
    sha = f" at {build.commit_sha[:12]}" if build.commit_sha else ""
    return f"{build.job.name} #{build.number} {build.state}{reason}{where}{sha}"


def build_notification_payload(build: Build) -> dict:
    """The body posted to a job's notification webhook: the build as JSON plus a Slack-shaped message."""
    url = f"{settings.SWARM_PUBLIC_URL}/admin/builds/build/{build.pk}/change/"
    summary = _summary(build)
    return {
        "text": f"[swarm] {summary}: {url}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"{STATE_EMOJI.get(build.state, '')} *<{url}|{summary}>*".strip()}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"attempts: {build.attempt_count} · triggered by {build.triggered_by or build.trigger}")}]},
        ],
        "event": "build.finished",
        "build": {
            "id": build.pk, "job": build.job.name, "number": build.number, "state": build.state,
            "failure_reason": build.failure_reason, "exit_code": build.exit_code, "branch": build.branch,
            "commit_sha": build.commit_sha, "attempts": build.attempt_count,
            "started_at": build.started_at.isoformat() if build.started_at else None,
            "finished_at": build.finished_at.isoformat() if build.finished_at else None,
            "url": url,
        },
    }


def _send_email(build: Build, payload: dict, emails: list[str]) -> dict:
    subject = f"[swarm] {build.job.name} #{build.number} {build.state}"
    lines = [f"{key}: {value}" for key, value in payload["build"].items()]
    send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, emails)
    return {"to": emails}


def _send_webhook(payload: dict, url: str) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "swarm-notifications"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - operator-configured URL
        return {"status": response.status}


def _send_once(build: Build, channel: str, send) -> bool:
    """Send one channel unless it was sent; the channel's row is locked while it is sent."""
    with transaction.atomic():
        BuildNotification.objects.get_or_create(build=build, channel=channel)
        row = BuildNotification.objects.select_for_update().get(build=build, channel=channel)
        if row.sent_at is not None:
            return False
        detail = send()
        row.sent_at, row.detail = timezone.now(), detail
        row.save(update_fields=["sent_at", "detail"])
        BuildEvent.objects.create(build=build, kind="notified", detail={"channel": channel, **detail})
    return True


def build_notify_finished(*, build_id: int) -> list[str]:
    """Send the job's notifications for a finished build once; returns the channels sent by this call."""
    build = Build.objects.select_related("job").filter(pk=build_id).first()
    if build is None or not build.is_finished:
        return []
    notifications = build.job.build_config.get("notifications") or {}
    if build.state not in notifications.get("on", ["success", "failed", "canceled"]):
        return []
    payload = build_notification_payload(build)
    sent: list[str] = []
    emails = notifications.get("email") or []
    if emails and _send_once(build, "email", lambda: _send_email(build, payload, emails)):
        sent.append("email")
    webhook = notifications.get("webhook")
    if webhook and _send_once(build, "webhook", lambda: _send_webhook(payload, webhook)):
        sent.append("webhook")
    return sent
