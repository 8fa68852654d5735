"""L4 alert_admin: an email through Django's mail backend and a JSON (Slack-compatible) webhook."""
from __future__ import annotations

import httpx
from django.conf import settings
from django.core.mail import send_mail


def alert_text(*, drone, reason: str) -> str:
    """The human sentence every alert carries."""
    return (f"Swarm drone {drone.name} ({drone.drone_type}, {drone.hostname or drone.ip or 'unknown host'}) "
            f"is still unhealthy after the self-healing ladder: {reason}. Last heartbeat: "
            f"{drone.last_heartbeat_at.isoformat() if drone.last_heartbeat_at else 'never'}.")


def alert_admin(*, drone, reason: str) -> tuple[bool, str]:
    """Send the alert on every configured channel; returns (all delivered, detail)."""
    text = alert_text(drone=drone, reason=reason)
    outcomes, delivered = [], True
    recipients = list(settings.SWARM_ESCALATION_ALERT_EMAILS)
    if recipients:
        try:
            send_mail(f"[swarm] drone {drone.name} needs a human", text, settings.DEFAULT_FROM_EMAIL, recipients)
            outcomes.append(f"email to {', '.join(recipients)}")
        except Exception as error:  # noqa: BLE001 - SMTP errors come in many types; all mean "not sent"
            delivered = False
            outcomes.append(f"email failed: {type(error).__name__}: {error}")
    url = settings.SWARM_ESCALATION_WEBHOOK_URL
    if url:
        payload = {"text": text, "drone": drone.name, "drone_type": drone.drone_type, "level": 4,
                   "action": "alert_admin", "reason": reason}
        try:
            response = httpx.post(url, json=payload, timeout=settings.SWARM_ESCALATION_HTTP_TIMEOUT)
            if response.status_code >= 300:
                delivered = False
                outcomes.append(f"webhook answered {response.status_code}")
            else:
                outcomes.append("webhook delivered")
        except httpx.HTTPError as error:
            delivered = False
            outcomes.append(f"webhook failed: {error}")
    if not outcomes:
        return False, "no alert channel configured (SWARM_ESCALATION_ALERT_EMAILS, SWARM_ESCALATION_WEBHOOK_URL)"
    return delivered, "; ".join(outcomes)
