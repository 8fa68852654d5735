"""Admin for builds: jobs with "trigger", builds with cancel/retry and a live log page, queues, deliveries.

Every action and every job save calls the same service the API calls
(`job_create`, `job_update`, `build_trigger`, `build_cancel`, `build_retry`),
so admin changes are validated and audited the API's way.
"""
from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from builds import services
from builds.choices import TERMINAL_STATES, TriggerKind
from builds.models import (
    Artifact,
    Build,
    BuildAttempt,
    BuildEvent,
    Job,
    Queue,
    WebhookDelivery,
    WebhookNamespaceSecret,
)
from builds.selectors import build_artifacts, build_waiting_reason
from swarm.core.admin_display import (
    LiveChangeList,
    PrettyJSONFormField,
    ReadOnlyAdmin,
    ReadOnlyInline,
    chips,
    json_display,
    timestamp_column,
)
from swarm.core.errors import ApiError
from swarm.core.service_admin import ServiceModelAdmin, adopt_saved, form_changes
from tenancy.admin import TenantScopedAdmin


def _actor(request) -> str:
    return f"user:{request.user.get_username()}"


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ["name", "priority", "max_concurrent", "tenant_rate_limit_per_minute", "description"]


class JobAdminForm(forms.ModelForm):
    """The job form, with the build config and URL checked by the same rules as the API.

    The webhook secret is write-only (stored encrypted): blank keeps the stored one.
    """

    webhook_secret = forms.CharField(
        required=False, max_length=200, widget=forms.PasswordInput(render_value=False),
        help_text="Shared secret of this repository's webhooks (stored encrypted; leave blank to keep).")
    clear_webhook_secret = forms.BooleanField(
        required=False, help_text="Remove this job's own webhook secret (the global one applies again).")
    build_config = PrettyJSONFormField(help_text="steps, env, artifacts, timeout, labels, retry, notifications "
                                                 "(docs/builds.md#job-configuration-build_config)")

    class Meta:
        model = Job
        fields = "__all__"

    def save(self, commit=True):
        job = super().save(commit=False)
        if self.cleaned_data.get("clear_webhook_secret"):
            job.webhook_secret = ""
        elif self.cleaned_data.get("webhook_secret"):
            job.webhook_secret = self.cleaned_data["webhook_secret"]
        if commit:
            job.save()
            self.save_m2m()
        return job

    def clean_build_config(self):
        from builds.config import validate_build_config

        try:
            return validate_build_config(self.cleaned_data.get("build_config"))
        except ApiError as error:
            raise forms.ValidationError(error.detail) from None

    def clean_scm_url(self):
        from builds.config import validate_scm_url

        try:
            return validate_scm_url(self.cleaned_data.get("scm_url"))
        except ApiError as error:
            raise forms.ValidationError(error.detail) from None

    def clean_default_branch(self):
        from builds.config import validate_branch_name

        branch = self.cleaned_data.get("default_branch") or ""
        if not branch:
            return ""  # the repository's own default branch
        try:
            return validate_branch_name(branch, field="default_branch")
        except ApiError as error:
            raise forms.ValidationError(error.detail) from None

    def clean_branch_filter(self):
        from builds.config import validate_branch_filter

        try:
            return validate_branch_filter(self.cleaned_data.get("branch_filter") or "")
        except ApiError as error:
            raise forms.ValidationError(error.detail) from None


@admin.register(Job)
class JobAdmin(TenantScopedAdmin, ServiceModelAdmin):
    form = JobAdminForm
    list_display = ["name", "tenant", "scm_url", "default_branch", "branch_filter", "queue", "enabled", "last_build"]
    list_filter = ["enabled", "queue", "tenant"]
    search_fields = ["name", "scm_url"]
    readonly_fields = ["scm_url_normalized", "next_build_number", "created_at", "updated_at"]
    actions = ["trigger_builds"]

    @admin.display(description="last build")
    def last_build(self, job):
        build = job.builds.order_by("-number").first()
        if build is None:
            return "—"
        url = reverse("admin:builds_build_change", args=[build.pk])
        return format_html('<a href="{}">#{} {}</a>', url, build.number, build.state)

    def save_model(self, request, obj, form, change):
        if change:
            changes = form_changes(form)
            # The write-only secret: blank keeps the stored one, the checkbox clears it.
            if changes.pop("clear_webhook_secret", False):
                changes["webhook_secret"] = ""
            elif not changes.get("webhook_secret"):
                changes.pop("webhook_secret", None)
            if not changes:
                return
            saved = services.job_update(job=Job.objects.get(pk=obj.pk), actor=_actor(request), **changes)
        else:
            saved = services.job_create(
                name=obj.name, scm_url=obj.scm_url, build_config=obj.build_config, tenant=obj.tenant, queue=obj.queue,
                default_branch=obj.default_branch, branch_filter=obj.branch_filter, description=obj.description,
                webhook_secret=obj.webhook_secret, build_tags=obj.build_tags, enabled=obj.enabled,
                actor=_actor(request),
            )
        adopt_saved(obj, saved)

    @admin.action(description="Trigger a build of the selected jobs (default branch)", permissions=["change"])
    def trigger_builds(self, request, queryset):
        for job in queryset:
            try:
                build = services.build_trigger(job=job, trigger=TriggerKind.MANUAL, triggered_by=_actor(request))
            except ApiError as error:
                self.message_user(request, f"{job.name}: {error.detail}", messages.ERROR)
                continue
            url = reverse("admin:builds_build_change", args=[build.pk])
            self.message_user(request, format_html('Queued <a href="{}">{} #{}</a>', url, job.name, build.number))


class AttemptInline(ReadOnlyInline):
    """Every try at the build, on its page."""

    model = BuildAttempt
    fields = ["number", "drone", "state_badge", "failure_reason", "detail", "exit_code", "started", "finished",
              "log_size", "log_checksum"]
    readonly_fields = fields

    @admin.display(description="state")
    def state_badge(self, attempt):
        return state_badge(attempt.state)

    started = timestamp_column("started_at", "started", empty="not yet", sortable=False)
    finished = timestamp_column("finished_at", "finished", empty="not yet", sortable=False)


class EventInline(ReadOnlyInline):
    """Why the build changed, in order."""

    model = BuildEvent
    fields = ["moment", "kind", "attempt_number", "actor", "details"]
    readonly_fields = fields

    moment = timestamp_column("at", "at", sortable=False)

    @admin.display(description="detail")
    def details(self, event):
        return json_display(event.detail)


def state_badge(state: str):
    return format_html('<span class="swarm-status swarm-status-{}" data-state="{}">{}</span>', state, state, state)


@admin.register(Build)
class BuildAdmin(LiveChangeList, ReadOnlyAdmin, TenantScopedAdmin):
    """Builds are written by triggers, drones and the reaper; here they are watched, canceled and retried."""

    live_topics = ("builds",)
    list_display = ["title", "state_cell", "failure_reason", "duration", "drone", "attempt_count", "branch",
                    "short_sha", "trigger", "created"]
    list_display_links = ["title"]
    list_filter = ["state", "failure_reason", "trigger", "queue", "job"]
    search_fields = ["job__name", "commit_sha", "branch"]
    list_select_related = ["job", "drone"]
    actions = ["cancel_builds", "retry_builds"]
    inlines = [AttemptInline, EventInline]
    change_form_template = "admin/builds/build/change_form.html"
    fieldsets = [
        (None, {"fields": ["job_link", "state_cell", "waiting_reason", "failure_reason", "exit_code", "drone",
                           "attempt_count", "duration", "finished"]}),
        ("Source", {"fields": ["branch", "commit_sha", "trigger", "triggered_by", "params_table", "retry_of"]}),
        ("Times", {"fields": ["created", "queued", "assigned", "started", "lease", "cancel_requested"]}),
        ("Scheduling", {"classes": ["collapse"], "fields": [
            "queue", "queue_priority", "labels", "timeout_seconds", "retries_used", "avoid_until", "ack_deadline"]}),
    ]
    readonly_fields = ["job_link", "state_cell", "waiting_reason", "failure_reason", "exit_code", "drone", "attempt_count", "duration",
                       "finished", "branch", "commit_sha", "trigger", "triggered_by", "params_table", "retry_of",
                       "created", "queued", "assigned", "started", "lease", "cancel_requested", "queue",
                       "queue_priority", "labels", "timeout_seconds", "retries_used", "avoid_until", "ack_deadline"]

    def has_cancel_permission(self, request, obj=None):
        return request.user.has_perm("builds.change_build")

    def has_retry_permission(self, request, obj=None):
        return request.user.has_perm("builds.change_build")

    @admin.display(description="build", ordering="-id")
    def title(self, build):
        return f"{build.job.name} #{build.number}"

    @admin.display(description="state", ordering="state")
    def state_cell(self, build):
        return state_badge(build.state)

    @admin.display(description="waiting because")
    def waiting_reason(self, build):
        return build_waiting_reason(build) or "—"

    @admin.display(description="job")
    def job_link(self, build):
        return format_html('<a href="{}">{}</a>', reverse("admin:builds_job_change", args=[build.job_id]),
                           build.job.name)

    @admin.display(description="duration")
    def duration(self, build):
        seconds = build.duration_seconds
        return "—" if seconds is None else f"{seconds:.1f} s"

    @admin.display(description="commit")
    def short_sha(self, build):
        return format_html('<code title="{}">{}</code>', build.commit_sha, build.commit_sha[:10]) if build.commit_sha \
            else "—"

    created = timestamp_column("created_at", "created")
    queued = timestamp_column("queued_at", "queued", sortable=False)
    assigned = timestamp_column("assigned_at", "assigned", empty="not yet", sortable=False)
    started = timestamp_column("started_at", "started", empty="not yet", sortable=False)
    finished = timestamp_column("finished_at", "finished", empty="not yet", sortable=False)
    lease = timestamp_column("lease_expires_at", "lease expires", empty="no lease", sortable=False)
    cancel_requested = timestamp_column("cancel_requested_at", "cancel requested", empty="no", sortable=False)

    @admin.display(description="params")
    def params_table(self, build):
        return json_display(build.params)

    @admin.display(description="required labels")
    def labels(self, build):
        return chips(build.required_labels)

    def get_urls(self):
        return [
            path("<int:build_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="builds_build_cancel"),
            path("<int:build_id>/retry/", self.admin_site.admin_view(self.retry_view), name="builds_build_retry"),
            *super().get_urls(),
        ]

    def _post_only(self, request, build_id):
        build = get_object_or_404(self.get_queryset(request), pk=build_id)
        if request.method != "POST" or not self.has_cancel_permission(request, build):
            return None, HttpResponseRedirect(reverse("admin:builds_build_change", args=[build_id]))
        return build, None

    def cancel_view(self, request, build_id: int):
        build, redirect = self._post_only(request, build_id)
        if redirect:
            return redirect
        try:
            build = services.build_cancel(build=build, actor=_actor(request))
            self.log_change(request, build, f"cancel requested ({build.state})")
            self.message_user(request, f"Build {build} is {build.state}.")
        except ApiError as error:
            self.message_user(request, error.detail, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:builds_build_change", args=[build_id]))

    def retry_view(self, request, build_id: int):
        build, redirect = self._post_only(request, build_id)
        if redirect:
            return redirect
        try:
            new_build = services.build_retry(build=build, actor=_actor(request))
            self.log_change(request, build, f"retried as build {new_build.pk}")
            return HttpResponseRedirect(reverse("admin:builds_build_change", args=[new_build.pk]))
        except ApiError as error:
            self.message_user(request, error.detail, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:builds_build_change", args=[build_id]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        build = get_object_or_404(self.get_queryset(request).select_related("job"), pk=object_id)
        artifacts = [
            {"artifact": artifact,
             "url": reverse("build-artifact-download", kwargs={"build_id": build.pk, "artifact_id": artifact.pk})}
            for artifact in build_artifacts(build)
        ]
        may_act = self.has_cancel_permission(request, build)
        extra_context = dict(extra_context or {}, build=build, artifacts=artifacts,
                             can_cancel=may_act and build.state not in TERMINAL_STATES,
                             can_retry=may_act and build.state in TERMINAL_STATES,
                             log_ws_path=f"/ws/builds/{build.pk}/log/",
                             log_api_path=reverse("build-log", kwargs={"build_id": build.pk}))
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Cancel the selected builds", permissions=["cancel"])
    def cancel_builds(self, request, queryset):
        for build in queryset:
            try:
                services.build_cancel(build=build, actor=_actor(request))
                self.log_change(request, build, "cancel requested")
            except ApiError as error:
                self.message_user(request, f"{build}: {error.detail}", messages.WARNING)

    @admin.action(description="Retry the selected builds", permissions=["retry"])
    def retry_builds(self, request, queryset):
        for build in queryset:
            try:
                new_build = services.build_retry(build=build, actor=_actor(request))
                self.log_change(request, build, f"retried as build {new_build.pk}")
            except ApiError as error:
                self.message_user(request, f"{build}: {error.detail}", messages.WARNING)


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin, TenantScopedAdmin):
    list_display = ["path", "build", "size", "sha256", "state", "download"]
    list_filter = ["state"]
    list_select_related = ["build__job"]
    readonly_fields = [f.name for f in Artifact._meta.fields] + ["download"]

    @admin.display(description="download")
    def download(self, artifact):
        url = reverse("build-artifact-download", kwargs={"build_id": artifact.build_id, "artifact_id": artifact.pk})
        return format_html('<a href="{}">download</a>', url)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["delivery_id", "provider", "event", "status", "build_ids", "received", "detail"]
    list_filter = ["provider", "status"]
    search_fields = ["delivery_id"]
    fields = ["provider", "delivery_id", "event", "status", "detail", "build_ids", "received", "processed_at",
              "payload_display"]
    readonly_fields = fields

    received = timestamp_column("received_at", "received")

    @admin.display(description="payload")
    def payload_display(self, delivery):
        return json_display(delivery.payload)


class WebhookNamespaceSecretForm(forms.ModelForm):
    """A namespace's webhook secret: write-only (stored encrypted); blank keeps the stored one."""

    secret = forms.CharField(required=False, max_length=200, widget=forms.PasswordInput(render_value=False),
                             help_text="The organisation, group or workspace hook's secret (stored encrypted; "
                                       "leave blank to keep).")

    class Meta:
        model = WebhookNamespaceSecret
        fields = ["provider", "namespace", "description"]

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("secret"):
            self.add_error("secret", "A new namespace secret needs the secret the forge's hook signs with.")
        return cleaned

    def save(self, commit=True):
        row = super().save(commit=False)
        if self.cleaned_data.get("secret"):
            row.secret = self.cleaned_data["secret"]
        if commit:
            row.save()
        return row


@admin.register(WebhookNamespaceSecret)
class WebhookNamespaceSecretAdmin(admin.ModelAdmin):
    """Secrets of organisation (GitHub), group (GitLab) and workspace (Bitbucket) webhooks; docs/builds.md."""

    form = WebhookNamespaceSecretForm
    list_display = ["namespace", "provider", "description", "created_at"]
    list_filter = ["provider"]
    search_fields = ["namespace"]
