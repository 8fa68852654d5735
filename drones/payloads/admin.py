"""Admin for payloads: types, versions, releases, the deployment matrix, drift, and live rollout pages.

Registered from drones/admin.py. The rollout page's buttons and the API's
verbs call the same services (drones.payloads.services); the page updates
over `/ws/payloads/rollouts/<id>/` (drones.payloads.consumers), pushed, not
polled.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, re_path, reverse
from django.utils.html import format_html

from drones.payloads import selectors, services
from drones.payloads.choices import FINISHED_ROLLOUT_STATES, RolloutState
from drones.payloads.drift import drift_reconcile
from drones.payloads.engine import rollout_progress
from drones.payloads.models import PayloadEvent, PayloadType, PayloadVersion, Release, Rollout
from swarm.core.errors import ApiError

STATE_COLOURS = {
    "pending": "#6e7781", "downloading": "#0969da", "installing": "#0969da", "verifying": "#8250df",
    "succeeded": "#1a7f37", "already_installed": "#1a7f37", "failed": "#cf222e", "skipped": "#bf8700",
    "reverted": "#d4680f", "running": "#0969da", "paused": "#bf8700", "awaiting_promotion": "#8250df",
    "reverting": "#d4680f", "aborted": "#6e7781",
    # matrix cells
    "in_sync": "#1a7f37", "drifted": "#cf222e", "deploying": "#0969da", "none": "#d0d7de",
}


def state_badge(state: str):
    return format_html('<span class="payload-state payload-state-{}" style="background:{};color:#fff;'
                       'padding:2px 8px;border-radius:10px;white-space:nowrap">{}</span>',
                       state, STATE_COLOURS.get(state, "#57606a"), state.replace("_", " "))


def _actor(request) -> str:
    return f"user:{request.user.get_username()}"


@admin.register(PayloadType)
class PayloadTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "health_check", "restarts_agent", "auto_reconcile", "keep_releases", "install_root",
                    "drifted"]
    search_fields = ["name"]

    @admin.display(description="drifted drones")
    def drifted(self, payload_type):
        count = payload_type.drone_states.filter(drifted=True).count()
        return state_badge("drifted") if count else "—"


@admin.register(PayloadVersion)
class PayloadVersionAdmin(admin.ModelAdmin):
    """Immutable: pushed with `swarmctl payload push` (or the API), never edited."""

    list_display = ["payload_type", "version", "short_sha", "size", "created_by", "created_at"]
    list_filter = ["payload_type"]
    search_fields = ["version", "bundle__sha256"]
    readonly_fields = ["payload_type", "version", "bundle", "notes", "created_by", "created_at"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="sha256")
    def short_sha(self, version):
        return format_html("<code>{}</code>", version.bundle.sha256[:16])

    @admin.display(description="size")
    def size(self, version):
        return version.bundle.size


class ReleaseForm(forms.ModelForm):
    """A new release: pick payload versions (one per type); the manifest is computed, never typed."""

    name = forms.CharField(required=False, help_text="vYYYY.MM.DD[.N]; empty: the next free one of today")
    from_current = forms.BooleanField(required=False, help_text="Start from what the fleet runs now")

    class Meta:
        model = Release
        fields = ["name", "payload_versions", "notes"]


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    form = ReleaseForm
    list_display = ["name", "payload_count", "short_sha", "manifest_link", "created_by", "created_at"]
    filter_horizontal = ["payload_versions"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "from_current", "payload_versions", "notes"]
        return ["name", "manifest_sha256", "manifest_link", "manifest", "notes", "created_by", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["name", "manifest_sha256", "manifest_link", "manifest", "notes",
                                       "created_by", "created_at"]

    @admin.display(description="payloads")
    def payload_count(self, release):
        return len(release.manifest.get("payloads", []))

    @admin.display(description="sha256")
    def short_sha(self, release):
        return format_html("<code>{}</code>", release.manifest_sha256[:16])

    @admin.display(description="manifest")
    def manifest_link(self, release):
        return format_html('<a href="{}">{}.json</a>', reverse("release-manifest", kwargs={"name": release.name}),
                           release.name)

    def save_model(self, request, obj, form, change):
        if change:
            return
        chosen = {version.payload_type.name: version.version for version in form.cleaned_data["payload_versions"]}
        release = services.release_create(actor=_actor(request), name=form.cleaned_data.get("name") or None,
                                          from_current=form.cleaned_data.get("from_current"), payloads=chosen,
                                          notes=form.cleaned_data.get("notes") or "")
        obj.pk = release.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        """The service already linked the versions."""


class RolloutStartForm(forms.ModelForm):
    """The admin's "start a rollout": the same fields as `POST /api/v1/rollouts`."""

    target_labels = forms.CharField(required=False, help_text="comma-separated; drones carrying all of them")
    target_names = forms.CharField(required=False, help_text="comma-separated drone names")

    class Meta:
        model = Rollout
        fields = ["payload_version", "release", "target_all", "target_labels", "target_names", "max_parallel",
                  "canary", "min_healthy_time", "healthy_deadline", "progress_deadline", "auto_revert",
                  "auto_promote", "failure_budget", "failure_budget_is_percent"]


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    """Rollouts: the list with progress, a live page per rollout, the deployment matrix and the drift view."""

    form = RolloutStartForm
    list_display = ["id", "subject", "badge", "progress_bar", "max_parallel", "canary", "is_reconcile",
                    "created_by", "created_at"]
    list_filter = ["state", "is_reconcile"]
    change_form_template = "admin/drones/rollout/live.html"
    change_list_template = "admin/drones/rollout/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("release", "payload_version__payload_type")

    @admin.display(description="what")
    def subject(self, rollout):
        return rollout.subject_label

    @admin.display(description="state", ordering="state")
    def badge(self, rollout):
        return state_badge(rollout.state)

    @admin.display(description="progress")
    def progress_bar(self, rollout):
        progress = rollout_progress(rollout)
        return format_html('<progress value="{}" max="{}" style="width:8em"></progress> {}/{}', progress["done"],
                           progress["total"] or 1, progress["done"], progress["total"])

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        split = lambda text: [item.strip() for item in (text or "").split(",") if item.strip()]  # noqa: E731
        fields = services.RolloutStrategy.__dataclass_fields__
        strategy = services.RolloutStrategy(**{name: data[name] for name in fields})
        rollout = services.rollout_start(actor=_actor(request), strategy=strategy,
                                         payload_version=data.get("payload_version"), release=data.get("release"),
                                         target_all=data.get("target_all"), labels=split(data.get("target_labels")),
                                         names=split(data.get("target_names")))
        obj.pk = rollout.pk
        obj.refresh_from_db()

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except ApiError as error:
            self.message_user(request, error.detail, messages.ERROR)
            return HttpResponseRedirect(request.path)

    def get_urls(self):
        return [
            path("matrix/", self.admin_site.admin_view(self.matrix_view), name="drones_rollout_matrix"),
            path("drift/", self.admin_site.admin_view(self.drift_view), name="drones_rollout_drift"),
            re_path(r"^(?P<rollout_id>[0-9]+)/(?P<verb>pause|resume|promote|abort|revert)/$",
                    self.admin_site.admin_view(self.verb_view), name="drones_rollout_verb"),
            *super().get_urls(),
        ]

    VERBS = {"pause": services.rollout_pause, "resume": services.rollout_resume,
             "promote": services.rollout_promote, "abort": services.rollout_abort,
             "revert": services.rollout_revert}

    def verb_view(self, request, rollout_id: int, verb: str):
        rollout = get_object_or_404(Rollout, pk=rollout_id)
        if request.method == "POST" and verb in self.VERBS and self.has_change_permission(request, rollout):
            try:
                rollout = self.VERBS[verb](rollout_id=rollout.pk, actor=_actor(request))
                self.log_change(request, rollout, verb)
                self.message_user(request, f"Rollout {rollout.pk}: {verb} accepted ({rollout.state}).")
            except ApiError as error:
                self.message_user(request, error.detail, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:drones_rollout_change", args=[rollout_id]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rollout = get_object_or_404(Rollout, pk=object_id)
        if request.method == "POST":
            return HttpResponseRedirect(request.path)
        finished = rollout.state in FINISHED_ROLLOUT_STATES
        buttons = {
            "pause": rollout.state in (RolloutState.PENDING, RolloutState.RUNNING, RolloutState.AWAITING_PROMOTION),
            "resume": rollout.state == RolloutState.PAUSED,
            "promote": rollout.state == RolloutState.AWAITING_PROMOTION,
            "abort": not finished and rollout.state != RolloutState.REVERTING,
            "revert": rollout.state not in (RolloutState.PENDING, RolloutState.REVERTING, RolloutState.REVERTED),
        }
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "rollout": rollout,
                   "title": f"Rollout {rollout.pk}: {rollout.subject_label}", "buttons": buttons,
                   "progress": rollout_progress(rollout), "targets": selectors.rollout_targets(rollout),
                   "events": PayloadEvent.objects.filter(rollout=rollout).select_related("drone")[:50],
                   "ws_path": f"/ws/payloads/rollouts/{rollout.pk}/", "colours": STATE_COLOURS,
                   "state_badge": state_badge(rollout.state)}
        return TemplateResponse(request, self.change_form_template, context)

    def matrix_view(self, request):
        types, rows = selectors.deployment_matrix()
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Deployment matrix", "types": types, "rows": rows, "colours": STATE_COLOURS}
        return TemplateResponse(request, "admin/drones/rollout/matrix.html", context)

    def drift_view(self, request):
        if request.method == "POST" and self.has_add_permission(request):
            started = drift_reconcile(actor=_actor(request))
            self.message_user(request, f"Started {len(started)} reconcile rollout(s)." if started
                              else "Nothing to reconcile (or the drifted drones are busy or down).")
            return HttpResponseRedirect(request.path)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Payload drift",
                   "states": selectors.drift_states(), "colours": STATE_COLOURS}
        return TemplateResponse(request, "admin/drones/rollout/drift.html", context)


def drone_drift_badge(drone) -> str:
    """The badge the drone list shows when any of its payloads drifted."""
    drifted = [state.payload_type.name for state in drone.payload_states.all() if state.drifted]
    if not drifted:
        return "—"
    return format_html('<span class="payload-drift-badge" title="{}" style="background:#cf222e;color:#fff;'
                       'padding:2px 8px;border-radius:10px">drift: {}</span>', ", ".join(drifted), len(drifted))
