"""Admin for the drone fleet: health badges, ping/ladder actions, escalation history, join tokens."""
from django import forms
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from drones import services
from drones.choices import DroneType
from drones.models import Drone, EscalationEvent, Hypervisor, JoinToken
from drones.provisioning import bootstrap_command
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


class EscalationEventInline(admin.TabularInline):
    """The ladder's history for one drone, newest first (read-only)."""

    model = EscalationEvent
    extra = 0
    can_delete = False
    ordering = ["-at", "-id"]
    fields = ["at", "level", "action", "result", "detail"]
    readonly_fields = fields
    max_num = 0
    verbose_name_plural = "escalation history"

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Drone)
class DroneAdmin(admin.ModelAdmin):
    """The fleet at a glance and the operator's levers."""

    list_display = ["name", "health", "status", "drone_type", "latency", "last_heartbeat", "label_list",
                    "ws_connected", "capacity", "payload_drift"]
    list_filter = ["status", "drone_type", "escalation_level", "ws_connected"]
    search_fields = ["name", "hostname", "ip"]
    inlines = [EscalationEventInline]
    actions = ["ping", "reset_escalation", "pause", "resume", "drain", "set_type_lxc", "set_type_qemu",
               "set_type_bare_metal", "set_type_unknown"]
    readonly_fields = ["health", "status", "registered_at", "last_seen_at", "last_heartbeat_at", "first_heartbeat_at",
                       "ws_connected", "ws_connected_at", "last_ping_at", "last_pong_at", "ping_latency_ms",
                       "missed_pongs", "escalation_level", "escalation_attempts", "last_escalation_at",
                       "healthy_since", "metrics", "agent_version", "os", "arch", "hostname", "ip"]
    fieldsets = [
        (None, {"fields": ["name", "health", "status", "drone_type", "drone_type_locked", "labels", "capacity"]}),
        ("Machine", {"fields": ["hostname", "ip", "agent_version", "os", "arch", "metrics"]}),
        ("Liveness", {"fields": ["registered_at", "last_seen_at", "last_heartbeat_at", "first_heartbeat_at",
                                 "ws_connected", "ws_connected_at", "last_ping_at", "last_pong_at",
                                 "ping_latency_ms", "missed_pongs"]}),
        ("Escalation", {"fields": ["escalation_level", "escalation_attempts", "last_escalation_at",
                                   "healthy_since"]}),
        ("L3: hypervisor", {"fields": ["hypervisor", "hypervisor_node", "hypervisor_vmid"]}),
        ("L1/L2 over SSH", {"classes": ["collapse"], "fields": [
            "ssh_host", "ssh_port", "ssh_user", "ssh_key_path", "ssh_known_hosts", "ssh_restart_command",
            "ssh_hard_restart_command"]}),
    ]

    @admin.display(description="health", ordering="escalation_level")
    def health(self, drone):
        return health_badge_html(drone.escalation_level)

    @admin.display(description="payloads")
    def payload_drift(self, drone):
        from drones.payloads.admin import drone_drift_badge

        return drone_drift_badge(drone)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("payload_states__payload_type")

    @admin.display(description="latency", ordering="ping_latency_ms")
    def latency(self, drone):
        return "—" if drone.ping_latency_ms is None else f"{drone.ping_latency_ms:.1f} ms"

    @admin.display(description="last heartbeat", ordering="last_heartbeat_at")
    def last_heartbeat(self, drone):
        if drone.last_heartbeat_at is None:
            return "never"
        return f"{timesince(drone.last_heartbeat_at, timezone.now())} ago"

    @admin.display(description="labels")
    def label_list(self, drone):
        return format_html_join(" ", '<code>{}</code>', ((label,) for label in drone.labels)) or "—"

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
    list_display = ["name", "provisioning_status", "uses", "max_uses", "expires_at", "revoked_at", "last_drone",
                    "created_at"]
    list_filter = ["provisioning_status"]
    actions = ["revoke"]
    readonly_fields = ["bootstrap", "provisioning_status", "uses", "created_at", "script_fetched_at",
                       "registered_at", "first_heartbeat_at", "last_drone", "revoked_at"]

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
            '<input type="text" readonly value="{}" id="bootstrap-command-{}" style="width:60em;font-family:monospace">'
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
class EscalationEventAdmin(admin.ModelAdmin):
    list_display = ["at", "drone", "level", "action", "result", "detail"]
    list_filter = ["level", "action", "result"]
    search_fields = ["drone__name", "detail"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# Payload types, versions, releases and rollouts register their admin in drones/payloads/admin.py.
from drones.payloads import admin as payload_admin  # noqa: E402,F401
