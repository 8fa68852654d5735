"""The operator's consoles in the admin: fleet topology, a drone's terminal and system log, terminal sessions.

Custom admin views in the manner of Django's own `contrib/auth/admin.py`:
registered by `get_urls()` of the drone admin, wrapped in
`admin_site.admin_view`, each checking its own permission (`drones.view_drone`
for the topology, `drones.open_terminal` for a terminal,
`drones.view_drone_syslog` for a system log). The pages talk to their
consumers (drones/topology/consumer.py, drones/terminal/consumer.py,
drones/terminal/syslog.py); the recordings of terminal sessions are served
from the bundle store, for the vendored player and for download.
"""
from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from bundles.blobstore import BlobStore
from drones.models import Drone, TerminalSession
from drones.terminal.recording import recording_key
from drones.terminal.sessions import OPEN_PERMISSION
from drones.terminal.syslog import SYSLOG_PERMISSION
from swarm.core.admin_display import EMPTY, LiveChangeList, ReadOnlyAdmin, seconds, timestamp_column


class DroneConsoleViews:
    """The topology, terminal and system-log pages, mixed into the drone admin (`get_urls()`)."""

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("topology/", wrap(self.topology_view), name="drones_drone_topology"),
            path("<int:object_id>/terminal/", wrap(self.terminal_view), name="drones_drone_terminal"),
            path("<int:object_id>/syslog/", wrap(self.syslog_view), name="drones_drone_syslog"),
            *super().get_urls(),
        ]

    def _page(self, request, template: str, title: str, **context):
        return TemplateResponse(request, template, {**self.admin_site.each_context(request), "title": title,
                                                    "opts": self.model._meta, **context})

    def topology_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return self._page(request, "drones/admin/topology.html", "Fleet topology",
                          can_open_terminal=request.user.has_perm(OPEN_PERMISSION))

    def _drone(self, request, object_id, permission: str) -> Drone:
        if not request.user.has_perm(permission):
            raise PermissionDenied
        return get_object_or_404(Drone, pk=object_id)

    def terminal_view(self, request, object_id: int):
        drone = self._drone(request, object_id, OPEN_PERMISSION)
        transport = "ssh" if request.GET.get("transport") == "ssh" else "agent"
        recent = TerminalSession.objects.filter(drone=drone).exclude(state=TerminalSession.State.REFUSED)[:5]
        return self._page(request, "drones/admin/terminal.html", f"Terminal on {drone.name}", original=drone,
                          drone=drone, transport=transport, recent_sessions=recent,
                          ws_path=f"/ws/terminal/{drone.name}/")

    def syslog_view(self, request, object_id: int):
        drone = self._drone(request, object_id, SYSLOG_PERMISSION)
        return self._page(request, "drones/admin/syslog.html", f"System log of {drone.name}", original=drone,
                          drone=drone, ws_path=f"/ws/syslog/{drone.name}/")


@admin.register(TerminalSession)
class TerminalSessionAdmin(LiveChangeList, ReadOnlyAdmin):
    """Every terminal session and refused attempt: the audit trail, with each recording to replay or download."""

    live_topics = ("terminal_sessions",)
    list_display = ["started", "username", "drone_link", "transport", "state_badge", "duration", "bytes_in",
                    "bytes_out", "end_reason", "recording"]
    list_filter = ["state", "transport", "drone_name"]
    search_fields = ["username", "drone_name", "end_reason", "refused_reason"]
    change_form_template = "admin/drones/terminalsession/change_form.html"
    fieldsets = [
        (None, {"fields": ["username", "drone_link", "transport", "state_badge", "started", "ended", "duration",
                           "end_reason", "exit_status"]}),
        ("Traffic", {"fields": ["bytes_in", "bytes_out", "size"]}),
        ("Recording", {"fields": ["recording", "recording_sha256", "recording_size"]}),
        ("Attempt", {"fields": ["refused_reason", "client_ip", "id"]}),
    ]
    readonly_fields = ["username", "drone_link", "transport", "state_badge", "started", "ended", "duration",
                       "end_reason", "exit_status", "bytes_in", "bytes_out", "size", "recording", "recording_sha256",
                       "recording_size", "refused_reason", "client_ip", "id"]

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<uuid:session_id>/recording.cast", wrap(self.recording_view), name="drones_terminalsession_cast"),
            path("<uuid:session_id>/download/", wrap(self.download_view), name="drones_terminalsession_download"),
            *super().get_urls(),
        ]

    started = timestamp_column("started_at", "started")
    ended = timestamp_column("ended_at", "ended", empty="still open")

    @admin.display(description="duration")
    def duration(self, session):
        return seconds(session.duration_seconds)

    @admin.display(description="size")
    def size(self, session):
        return f"{session.cols}×{session.rows}"

    @admin.display(description="drone", ordering="drone_name")
    def drone_link(self, session):
        if session.drone_id is None:
            return session.drone_name
        return format_html('<a href="{}">{}</a>', reverse("admin:drones_drone_change", args=[session.drone_id]),
                           session.drone_name)

    @admin.display(description="state", ordering="state")
    def state_badge(self, session):
        return format_html('<span class="swarm-status swarm-status-{}">{}</span>', session.state, session.state)

    @admin.display(description="recording")
    def recording(self, session):
        if not session.recording_sha256:
            return EMPTY
        return format_html('<a href="{}">replay</a> · <a href="{}">download .cast</a>',
                           reverse("admin:drones_terminalsession_change", args=[session.pk]),
                           reverse("admin:drones_terminalsession_download", args=[session.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        session = self.get_object(request, object_id)
        extra = {"session": session}
        if session is not None and session.recording_sha256:
            extra["cast_url"] = reverse("admin:drones_terminalsession_cast", args=[session.pk])
            extra["download_url"] = reverse("admin:drones_terminalsession_download", args=[session.pk])
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def _recording(self, request, session_id, *, attachment: bool):
        if not self.has_view_permission(request):
            raise PermissionDenied
        session = get_object_or_404(TerminalSession, pk=session_id)
        if not session.recording_sha256:
            raise Http404("this session has no recording")
        stream = BlobStore().open(recording_key(session.recording_sha256))
        filename = f"terminal-{session.drone_name}-{session.started_at:%Y%m%d-%H%M%S}.cast"
        return FileResponse(stream, as_attachment=attachment, filename=filename,
                            content_type="application/x-asciicast")

    def recording_view(self, request, session_id):
        return self._recording(request, session_id, attachment=False)

    def download_view(self, request, session_id):
        return self._recording(request, session_id, attachment=True)
