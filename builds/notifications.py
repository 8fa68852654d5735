"""Completion notifications per job: e-mail and a JSON webhook (`notifications` in the build config)."""
from __future__ import annotations

import json
import logging
import urllib.request

from django.conf import settings
from django.core.mail import send_mail

from builds.models import Build, BuildEvent

logger = logging.getLogger(__name__)


def build_notification_payload(build: Build) -> dict:
    """The JSON body posted to a job's notification webhook."""
    return {
        "event": "build.finished",
        "build": {
            "id": build.pk, "job": build.job.name, "number": build.number, "state": build.state,
            "failure_reason": build.failure_reason, "exit_code": build.exit_code, "branch": build.branch,
            "commit_sha": build.commit_sha, "attempts": build.attempt_count,
            "started_at": build.started_at.isoformat() if build.started_at else None,
            "finished_at": build.finished_at.isoformat() if build.finished_at else None,
            "url": f"{settings.SWARM_PUBLIC_URL}/admin/builds/build/{build.pk}/change/",
        },
    }


def build_notify_finished(*, build_id: int) -> list[str]:
    """Send the job's notifications for a finished build once; returns the channels used."""
    build = Build.objects.select_related("job").filter(pk=build_id).first()
    if build is None or not build.is_finished:
        return []
    notifications = build.job.build_config.get("notifications") or {}
    if build.state not in notifications.get("on", ["success", "failed", "canceled"]):
        return []
    already = set(BuildEvent.objects.filter(build=build, kind="notified").values_list("detail__channel", flat=True))
    sent: list[str] = []
    payload = build_notification_payload(build)
    emails = notifications.get("email") or []
    if emails and "email" not in already:
        subject = f"[swarm] {build.job.name} #{build.number} {build.state}"
        lines = [f"{key}: {value}" for key, value in payload["build"].items()]
        send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, emails)
        BuildEvent.objects.create(build=build, kind="notified", detail={"channel": "email", "to": emails})
        sent.append("email")
    webhook = notifications.get("webhook")
    if webhook and "webhook" not in already:
        request = urllib.request.Request(webhook, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "swarm-notifications"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - operator-configured URL
            status = response.status
        BuildEvent.objects.create(build=build, kind="notified", detail={"channel": "webhook", "status": status})
        sent.append("webhook")
    return sent
