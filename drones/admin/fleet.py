"""Admin for the drone fleet: health badges, ping/ladder actions, escalation history, join tokens, hypervisors.

Drones register themselves (there is no "Add drone"); their page leads to
the operator's consoles — terminal, system log, topology (drones/admin/console.py).
"""
from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from drones import services
from drones.admin.console import DroneConsoleViews
from drones.choices import DroneType
from drones.models import Drone, EscalationEvent, Hypervisor, JoinToken
from drones.provisioning import bootstrap_command
from swarm.core.admin_display import (
    EMPTY,
    LiveChangeList,
    ReadOnlyAdmin,
    ReadOnlyInline,
    chips,
    json_display,
    timestamp_column,
)
from swarm.core.secret_box import SecretUndecryptable

# L0 … L4: label and colour of the health badge.
HEALTH_BADGES = {
    0: ("L0 healthy", "#1a7f37"),
    1: ("L1 restarting", "#bf8700"),
    2: ("L2 hard restart", "#d4680f"),
    3: ("L3 rebooting", "#cf4a0f"),
    4: ("L4 critical", "#cf222e"),
}
SYNC_PING_LIMIT = 5


def health_badge_html(level: int):
    """The coloured L0–L4 badge used in the list and on the change page."""
    label, colour = HEALTH_BADGES.get(level, (f"L{level}", "#57606a"))
    return format_html(
        '<span class="drone-health drone-health-l{}" style="background:{};color:#fff;padding:2px 8px;'
        'border-radius:10px;font-weight:600;white-space:nowrap">{}</span>', level, colour, label)


class EscalationEventInline(ReadOnlyInline):
    """The ladder's history for one drone, newest first."""

    model = EscalationEvent
    ordering = ["-at", "-id"]
    fields = ["moment", "level", "action", "result", "detail"]
    readonly_fields = fields
    verbose_name_plural = "escalation history"

    moment = timestamp_column("at", "at", sortable=False)


@admin.register(Drone)
class DroneAdmin(DroneConsoleViews, LiveChangeList):
    """The fleet at a glance and the operator's levers."""

    live_topics = ("drones",)
    list_display = ["name", "health", "status_badge", "drone_type", "sandbox_badge", "latency", "last_heartbeat",
                    "label_list", "ws_connected", "capacity", "payload_drift"]
    list_filter = ["status", "drone_type", "sandbox", "escalation_level", "ws_connected"]
    search_fields = ["name", "hostname", "ip"]
    inlines = [EscalationEventInline]
    change_form_template = "admin/drones/drone/change_form.html"
    actions = ["ping", "reset_escalation", "pause", "resume", "drain", "set_type_lxc", "set_type_qemu",
               "set_type_bare_metal", "set_type_unknown"]
    readonly_fields = ["health", "status", "registered", "last_seen", "last_heartbeat", "first_heartbeat",
                       "ws_connected", "ws_connected_since", "last_ping", "last_pong", "latency", "missed_pongs",
                       "escalation_level", "escalation_attempts", "last_escalation", "healthy_since_display",
                       "metrics_table", "agent_version", "os", "arch", "hostname", "ip", "label_list", "sandbox_badge",
                       "sandbox_detail", "sandbox_reported", "container_engine", "container_detail"]
    fieldsets = [
        (None, {"fields": ["name", "health", "status", "last_heartbeat", "latency", "ws_connected", "label_list",
                           "capacity"]}),
        ("Build sandbox (reported by the agent; only a drone offering one takes a job that needs it)",
         {"fields": ["sandbox_badge", "sandbox_detail", "sandbox_reported"]}),
        ("Containers (reported by the agent; only a drone whose engine ran an image takes a job with an image)",
         {"fields": ["container_engine", "container_detail"]}),
        ("Escalation", {"fields": ["escalation_level", "escalation_attempts", "last_escalation",
                                   "healthy_since_display", "missed_pongs"]}),
        ("Machine", {"fields": ["drone_type", "drone_type_locked", "hostname", "ip", "agent_version", "os", "arch",
                                "metrics_table"]}),
        ("Liveness", {"classes": ["collapse"], "fields": [
            "registered", "first_heartbeat", "last_seen", "ws_connected_since", "last_ping", "last_pong"]}),
        ("Labels (the agent reports them; edited here they last until it registers again)",
         {"classes": ["collapse"], "fields": ["labels"]}),
        ("L3: hypervisor", {"classes": ["collapse"], "fields": ["hypervisor", "hypervisor_node", "hypervisor_vmid"]}),
        ("SSH (L1/L2 fallback and the SSH terminal; host keys pinned, never trusted on first use)",
         {"classes": ["collapse"], "fields": [
             "ssh_host", "ssh_port", "ssh_user", "ssh_key_path", "ssh_known_hosts", "ssh_restart_command",
             "ssh_hard_restart_command"]}),
    ]

    def has_add_permission(self, request):
        return False  # machines join with a join token (Join tokens → Add)

    @admin.display(description="health", ordering="escalation_level")
    def health(self, drone):
        return health_badge_html(drone.escalation_level)

    @admin.display(description="status", ordering="status")
    def status_badge(self, drone):
        return format_html('<span class="swarm-status swarm-status-{}">{}</span>', drone.status, drone.status)

    @admin.display(description="payloads")
    def payload_drift(self, drone):
        from drones.payloads.admin import drone_drift_badge

        return drone_drift_badge(drone)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("payload_states__payload_type")

    @admin.display(description="ping latency", ordering="ping_latency_ms")
    def latency(self, drone):
        return EMPTY if drone.ping_latency_ms is None else f"{drone.ping_latency_ms:.1f} ms"

    last_heartbeat = timestamp_column("last_heartbeat_at", "last heartbeat", empty="never")
    first_heartbeat = timestamp_column("first_heartbeat_at", "first heartbeat", empty="never", sortable=False)
    registered = timestamp_column("registered_at", "registered", sortable=False)
    last_seen = timestamp_column("last_seen_at", "last seen (any agent call)", empty="never", sortable=False)
    ws_connected_since = timestamp_column("ws_connected_at", "WebSocket connected since", empty="never", sortable=False)
    last_ping = timestamp_column("last_ping_at", "last ping", empty="never", sortable=False)
    last_pong = timestamp_column("last_pong_at", "last pong", empty="never", sortable=False)
    last_escalation = timestamp_column("last_escalation_at", "last escalation", empty="never", sortable=False)
    healthy_since_display = timestamp_column("healthy_since", "healthy since", empty="not healthy", sortable=False)

    @admin.display(description="labels")
    def label_list(self, drone):
        return chips(drone.labels)

    sandbox_reported = timestamp_column("sandbox_reported_at", "sandbox reported", empty="never", sortable=False)

    @admin.display(description="sandbox", ordering="sandbox")
    def sandbox_badge(self, drone):
        css = {"bubblewrap": "online", "none": "draining", "unavailable": "offline"}.get(drone.sandbox, "stale")
        return format_html('<span class="swarm-status swarm-status-{}" title="{}">{}</span>', css,
                           drone.sandbox_detail, drone.get_sandbox_display())

    def save_model(self, request, obj, form, change):
        from drones.sandbox import labels_with_sandbox

        # The sandbox:* and container:* labels are the control plane's, from the agent's report: an edit keeps
        # them as reported.
        obj.labels = labels_with_sandbox(obj.labels, obj.sandbox, container_engine=obj.container_engine)
        super().save_model(request, obj, form, change)

    @admin.display(description="metrics (last heartbeat)")
    def metrics_table(self, drone):
        return json_display(drone.metrics)

    def _actor(self, request) -> str:
        return f"user:{request.user.get_username()}"

    @admin.action(description="Ping (shows latency)", permissions=["change"])
    def ping(self, request, queryset):
        drones = list(queryset)
        if len(drones) > SYNC_PING_LIMIT:
            for drone in drones:
                services.drone_ping_send(drone=drone)
            self.message_user(request, f"Pinged {len(drones)} drones; latencies appear as the pongs arrive.")
            return
        for drone in drones:
            result = services.drone_ping(drone=drone)
            if result["ok"]:
                self.message_user(request, f"{drone.name}: pong in {result['latency_ms']:.1f} ms")
            else:
                self.message_user(request, f"{drone.name}: {result['detail']}", level=messages.WARNING)

    @admin.action(description="Reset escalation to L0", permissions=["change"])
    def reset_escalation(self, request, queryset):
        for drone in queryset:
            services.drone_reset_escalation(drone=drone, actor=self._actor(request))
            self.log_change(request, drone, "reset escalation")
        self.message_user(request, f"Reset {queryset.count()} drone(s) to L0.")

    def _hold(self, request, queryset, service, verb):
        for drone in queryset:
            service(drone=drone, actor=self._actor(request))
            self.log_change(request, drone, verb)
        self.message_user(request, f"{verb.capitalize()}: {', '.join(d.name for d in queryset)}")

    @admin.action(description="Pause (no new work, ladder off)", permissions=["change"])
    def pause(self, request, queryset):
        self._hold(request, queryset, services.drone_pause, "paused")

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request, queryset):
        self._hold(request, queryset, services.drone_resume, "resumed")

    @admin.action(description="Drain (finish work, take none)", permissions=["change"])
    def drain(self, request, queryset):
        self._hold(request, queryset, services.drone_drain, "draining")

    def _set_type(self, request, queryset, drone_type):
        for drone in queryset:
            services.drone_set_type(drone=drone, drone_type=drone_type, actor=self._actor(request))
            self.log_change(request, drone, f"set type {drone_type}")
        self.message_user(request, f"Set type {drone_type} on {queryset.count()} drone(s).")

    @admin.action(description="Set type: lxc", permissions=["change"])
    def set_type_lxc(self, request, queryset):
        self._set_type(request, queryset, DroneType.LXC)

    @admin.action(description="Set type: qemu", permissions=["change"])
    def set_type_qemu(self, request, queryset):
        self._set_type(request, queryset, DroneType.QEMU)

    @admin.action(description="Set type: bare-metal", permissions=["change"])
    def set_type_bare_metal(self, request, queryset):
        self._set_type(request, queryset, DroneType.BARE_METAL)

    @admin.action(description="Set type: unknown", permissions=["change"])
    def set_type_unknown(self, request, queryset):
        self._set_type(request, queryset, DroneType.UNKNOWN)


class HypervisorForm(forms.ModelForm):
    """The API token secret is write-only: blank keeps the stored one."""

    token_secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                                   help_text="Proxmox API token secret (stored encrypted; leave blank to keep)")

    url = forms.URLField(assume_scheme="https", help_text="Base URL, e.g. https://pve.example.com:8006")

    class Meta:
        model = Hypervisor
        fields = ["name", "url", "token_id", "token_secret", "verify_tls"]

    def save(self, commit=True):
        hypervisor = super().save(commit=False)
        if self.cleaned_data.get("token_secret"):
            hypervisor.token_secret = self.cleaned_data["token_secret"]
        if commit:
            hypervisor.save()
        return hypervisor


@admin.register(Hypervisor)
class HypervisorAdmin(admin.ModelAdmin):
    form = HypervisorForm
    list_display = ["name", "url", "token_id", "verify_tls"]


class JoinTokenForm(forms.ModelForm):
    class Meta:
        model = JoinToken
        fields = ["name", "expires_at", "max_uses"]


@admin.register(JoinToken)
class JoinTokenAdmin(admin.ModelAdmin):
    """Join tokens with their provisioning progress and a copyable bootstrap command."""

    form = JoinTokenForm
    list_display = ["name", "provisioning_status", "uses", "max_uses", "expires", "revoked_at", "last_drone",
                    "created"]
    list_filter = ["provisioning_status"]
    actions = ["revoke"]
    readonly_fields = ["bootstrap", "provisioning_status", "uses", "created_at", "script_fetched_at",
                       "registered_at", "first_heartbeat_at", "last_drone", "revoked_at"]

    created = timestamp_column("created_at", "created")
    expires = timestamp_column("expires_at", "expires", empty="never")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "expires_at", "max_uses"]
        return ["name", "bootstrap", "expires_at", "max_uses", "uses", "provisioning_status", "created_at",
                "script_fetched_at", "registered_at", "first_heartbeat_at", "last_drone", "revoked_at"]

    @admin.display(description="bootstrap command")
    def bootstrap(self, token):
        try:
            plaintext = token.plaintext
        except SecretUndecryptable:
            return ("— (the stored token cannot be decrypted: put the key it was written with back into "
                    "SWARM_SECRETS_KEYS, or issue a new join token)")
        if not token.is_usable or not plaintext:
            return "— (token not usable)"
        command = bootstrap_command(join_token=plaintext)
        return format_html(
            '<input type="text" readonly value="{}" id="bootstrap-command-{}" class="swarm-command">'
            ' <button type="button" class="button" onclick="navigator.clipboard.writeText('
            'document.getElementById(\'bootstrap-command-{}\').value)">Copy</button>', command, token.pk, token.pk)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, _ = services.join_token_issue(name=obj.name, expires_at=obj.expires_at, max_uses=obj.max_uses,
                                             created_by=request.user)
        obj.pk = token.pk
        obj.refresh_from_db()

    @admin.action(description="Revoke", permissions=["change"])
    def revoke(self, request, queryset):
        for token in queryset:
            services.join_token_revoke(token=token, actor=f"user:{request.user.get_username()}")
        self.message_user(request, f"Revoked {queryset.count()} join token(s).")


@admin.register(EscalationEvent)
class EscalationEventAdmin(ReadOnlyAdmin):
    """Every step of the ladder, fleet-wide (written by the ladder only)."""

    list_display = ["moment", "drone", "level", "action", "result", "detail"]
    list_filter = ["level", "action", "result"]
    search_fields = ["drone__name", "detail"]
    list_select_related = ["drone"]

    moment = timestamp_column("at", "at")
