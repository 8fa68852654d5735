"""Terminal sessions: who may open one, the per-drone limit, and the audit trail (writes).

Every attempt leaves a `TerminalSession` row — a refusal too (`state=refused`,
with the reason), once the caller is a known user — and an audit record
(`terminal.refused`, `terminal.open`, `terminal.close`). Anonymous sockets
are refused and logged: there is nobody to attribute a row to.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from drones.models import Drone, TerminalSession
from swarm.core.live import live_changed_on_commit
from swarm.core.services import audit_record

logger = logging.getLogger(__name__)

OPEN_PERMISSION = "drones.open_terminal"
#: Close codes of the browser's socket (4xxx: application codes, like HTTP's).
CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_UNAVAILABLE, CLOSE_LIMIT = 4401, 4403, 4404, 4409, 4429


@dataclass(frozen=True)
class TerminalDecision:
    """The outcome of an attempt: an open session, or a refusal with its close code and sentence."""

    session: TerminalSession | None
    close_code: int | None = None
    detail: str = ""

    @property
    def refused(self) -> bool:
        return self.session is None or self.session.state == TerminalSession.State.REFUSED


def _actor(user) -> str:
    return f"user:{user.get_username()}"


def _refuse(*, user, drone: Drone | None, drone_name: str, transport: str, client_ip: str | None, code: int,
            detail: str) -> TerminalDecision:
    session = TerminalSession.objects.create(
        drone=drone, drone_name=drone_name[:100], user=user, username=user.get_username(), transport=transport,
        state=TerminalSession.State.REFUSED, refused_reason=detail[:300], client_ip=client_ip,
        ended_at=timezone.now())
    audit_record(actor=_actor(user), action="terminal.refused", obj=session,
                 detail={"drone": drone_name, "transport": transport, "reason": detail})
    live_changed_on_commit("terminal_sessions")
    logger.warning("terminal on %s refused for %s: %s", drone_name, user.get_username(), detail)
    return TerminalDecision(session, code, detail)


def open_sessions_count(*, drone_id: int) -> int:
    """Sessions on the drone that count against its limit (a row left open by a crashed server stops counting
    once it is older than the longest a session may last)."""
    oldest = timezone.now() - timedelta(seconds=settings.SWARM_TERMINAL_MAX_SECONDS)
    return TerminalSession.objects.filter(drone_id=drone_id, state=TerminalSession.State.OPEN,
                                          started_at__gte=oldest).count()


def terminal_session_start(*, user, drone_name: str, transport: str, cols: int, rows: int,
                           client_ip: str | None = None) -> TerminalDecision:
    """Decide an attempt to open a terminal and, when it may go ahead, open its session row.

    Refused before anything is opened: anonymous, non-staff, staff without
    `drones.open_terminal`, an unknown drone, a transport the drone cannot
    offer (no agent connected; SSH without a host and a pinned host key), and
    the per-drone limit SWARM_TERMINAL_MAX_SESSIONS_PER_DRONE.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        logger.warning("terminal on %s refused: anonymous socket", drone_name)
        return TerminalDecision(None, CLOSE_UNAUTHENTICATED, "log in to the admin first")
    if transport not in TerminalSession.Transport.values:
        transport = TerminalSession.Transport.AGENT
    drone = Drone.objects.filter(name=drone_name).first()
    refusal = dict(user=user, drone=drone, drone_name=drone_name, transport=transport, client_ip=client_ip)
    if not (user.is_active and user.is_staff):
        return _refuse(**refusal, code=CLOSE_FORBIDDEN, detail="only staff users may open terminals")
    if not user.has_perm(OPEN_PERMISSION):
        return _refuse(**refusal, code=CLOSE_FORBIDDEN,
                       detail=f"{user.get_username()} lacks the permission {OPEN_PERMISSION}")
    if drone is None:
        return _refuse(**refusal, code=CLOSE_NOT_FOUND, detail=f"no drone named {drone_name!r}")
    if transport == TerminalSession.Transport.SSH and not drone.ssh_configured:
        return _refuse(**refusal, code=CLOSE_UNAVAILABLE,
                       detail="SSH needs the drone's SSH host and its pinned host key (ssh_known_hosts)")
    if transport == TerminalSession.Transport.AGENT and not drone.ws_connected:
        return _refuse(**refusal, code=CLOSE_UNAVAILABLE, detail=f"the agent of {drone.name} is not connected")
    with transaction.atomic():
        Drone.objects.select_for_update().filter(pk=drone.pk).first()  # serialises the limit check per drone
        limit = settings.SWARM_TERMINAL_MAX_SESSIONS_PER_DRONE
        if open_sessions_count(drone_id=drone.pk) >= limit:
            return _refuse(**refusal, code=CLOSE_LIMIT,
                           detail=f"{drone.name} already has {limit} open terminal sessions (the limit)")
        session = TerminalSession.objects.create(
            drone=drone, drone_name=drone.name, user=user, username=user.get_username(), transport=transport,
            state=TerminalSession.State.OPEN, client_ip=client_ip, cols=cols, rows=rows)
        audit_record(actor=_actor(user), action="terminal.open", obj=session,
                     detail={"drone": drone.name, "transport": transport})
        live_changed_on_commit("terminal_sessions")
    logger.info("terminal %s opened on %s by %s over %s", session.pk, drone.name, user.get_username(), transport)
    return TerminalDecision(session)


def terminal_session_close(*, session_id, reason: str, exit_status: int | None, bytes_in: int, bytes_out: int,
                           recording: tuple[str, int] | None, cols: int, rows: int) -> TerminalSession | None:
    """Close the session's row with how it ended and its recording (idempotent: the first close wins)."""
    with transaction.atomic():
        session = TerminalSession.objects.select_for_update().filter(pk=session_id).first()
        if session is None or session.state != TerminalSession.State.OPEN:
            return session
        session.state = TerminalSession.State.CLOSED
        session.ended_at = timezone.now()
        session.end_reason = reason[:200]
        session.exit_status = exit_status
        session.bytes_in, session.bytes_out = bytes_in, bytes_out
        session.cols, session.rows = cols, rows
        if recording is not None:
            session.recording_sha256, session.recording_size = recording
        session.save()
        audit_record(actor=f"user:{session.username}", action="terminal.close", obj=session,
                     detail={"drone": session.drone_name, "reason": session.end_reason, "exit_status": exit_status,
                             "seconds": round(session.duration_seconds or 0, 3), "bytes_in": bytes_in,
                             "bytes_out": bytes_out, "recording_sha256": session.recording_sha256})
        live_changed_on_commit("terminal_sessions")
    logger.info("terminal %s closed (%s): %s bytes in, %s out", session.pk, reason, bytes_in, bytes_out)
    return session
