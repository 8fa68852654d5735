"""Operator UI for executions: the list, a page with the event timeline and output, spawn and cancel.

The "spawn" action (`spawn_executions`) sits on the workflows list
(`workflows.admin.registry.WorkflowAdmin.actions`); "cancel" on the executions
list. Both call the same services as the API.
"""
from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from swarm.core.admin_display import LiveChangeList, ReadOnlyAdmin, json_display, timestamp_column
from swarm.core.errors import ApiError
from swarm.core.principals import principal_for_user
from tenancy.admin import TenantScopedAdmin
from workflows import services
from workflows.models import Execution


TIMELINE_LIMIT = 2000


@admin.action(description="Spawn an execution of the active version", permissions=["change"])
def spawn_executions(modeladmin, request, queryset):
    """Admin action on workflows: spawn each selected workflow's active version."""
    principal = principal_for_user(request.user)
    for workflow in queryset.select_related("tenant"):
        try:
            execution = services.execution_spawn(principal=principal, workflow=workflow)
        except ApiError as error:
            modeladmin.message_user(request, f"{workflow}: {error.detail}", messages.ERROR)
            continue
        modeladmin.log_change(request, workflow, f"Spawned execution {execution.pk}")
        modeladmin.message_user(request, format_html(
            '{}: spawned <a href="/admin/workflows/execution/{}/change/">execution {}</a>.', workflow, execution.pk,
            execution.pk))


@admin.register(Execution)
class ExecutionAdmin(LiveChangeList, ReadOnlyAdmin, TenantScopedAdmin):
    """Executions are written by spawns, runtimes and boot scripts: watched here, live, and cancelled."""

    live_topics = ("executions",)
    list_display = ["title", "workflow", "version_label", "status_cell", "exit_code", "runtime", "duration",
                    "spawned_by", "created"]
    list_display_links = ["title"]
    list_filter = ["status", "runtime", "tenant"]
    search_fields = ["id", "workflow__slug", "tenant__slug"]
    list_select_related = ["workflow__tenant", "version"]
    change_form_template = "admin/workflows/execution/change_form.html"
    readonly_fields = ["tenant", "workflow", "version", "runtime", "status_cell", "exit_code", "duration",
                       "env_table", "inputs_table", "timeout_sec", "spawned_by", "created", "started", "finished",
                       "deadline", "sandbox", "accelerator", "timeline", "output", "console", "drone_cell",
                       "waiting_reason", "required_labels"]
    fieldsets = [
        (None, {"fields": ["workflow", "version", "status_cell", "exit_code", "duration", "runtime", "sandbox",
                           "accelerator", "spawned_by", "tenant"]}),
        ("Drone runtime", {"fields": ["required_labels", "drone_cell", "waiting_reason"]}),
        ("Times", {"fields": ["created", "started", "finished", "deadline"]}),
        ("Event timeline", {"fields": ["timeline"]}),
        ("Output", {"fields": ["output"]}),
        ("Console (the sandbox's or VM's log, its tail as the runtime reported it)", {"fields": ["console"]}),
        ("Parameters", {"classes": ["collapse"], "fields": ["env_table", "inputs_table", "timeout_sec"]}),
    ]
    actions = ["cancel_executions"]

    def has_cancel_permission(self, request, obj=None):
        return request.user.has_perm("workflows.change_execution")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        execution = self.get_object(request, object_id)
        extra = {"live_topics": f"execution:{execution.pk}"} if execution is not None else {}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    @admin.display(description="execution", ordering="-id")
    def title(self, execution: Execution) -> str:
        return f"execution {execution.pk}"

    @admin.display(description="version")
    def version_label(self, execution: Execution) -> str:
        return execution.version.version

    @admin.display(description="status", ordering="status")
    def status_cell(self, execution: Execution) -> str:
        return format_html('<span class="swarm-status swarm-status-{}" id="execution-status">{}</span>',
                           execution.status, execution.get_status_display())

    @admin.display(description="duration")
    def duration(self, execution: Execution) -> str:
        seconds = execution.duration_seconds
        return "—" if seconds is None else f"{seconds:.1f} s"

    created = timestamp_column("created_at", "created")
    started = timestamp_column("started_at", "started", empty="not yet", sortable=False)
    finished = timestamp_column("finished_at", "finished", empty="not yet", sortable=False)
    deadline = timestamp_column("deadline_at", "deadline", empty="none", sortable=False)

    @admin.display(description="environment")
    def env_table(self, execution: Execution):
        return json_display(execution.env)

    @admin.display(description="inputs")
    def inputs_table(self, execution: Execution):
        return json_display(execution.inputs)

    @admin.display(description="sandbox")
    def sandbox(self, execution: Execution) -> str:
        return (execution.runtime_state or {}).get("sandbox", "—")

    @admin.display(description="drone")
    def drone_cell(self, execution: Execution) -> str:
        """The drone that claimed a drone-runtime execution."""
        return execution.drone.name if execution.drone_id and execution.drone else "—"

    @admin.display(description="waiting for a drone")
    def waiting_reason(self, execution: Execution) -> str:
        """Why a queued drone-runtime execution has no drone yet (labels, drones connected, free slots)."""
        waiting = (execution.runtime_state or {}).get("waiting") or {}
        if execution.status != "queued" or not waiting:
            return "—"
        return format_html('<span id="execution-waiting">{}</span>', waiting.get("reason", ""))

    @admin.display(description="accelerator")
    def accelerator(self, execution: Execution) -> str:
        """kvm or tcg for a microVM execution."""
        return (execution.runtime_state or {}).get("accelerator", "—")

    @admin.display(description="console")
    def console(self, execution: Execution) -> str:
        """The console tail of the runtime_exited event (kernel, guest init, boot messages)."""
        event = execution.events.filter(type="runtime_exited").order_by("-seq").first()
        tail = (event.data or {}).get("console_tail", "") if event else ""
        return format_html('<pre id="execution-console" style="white-space: pre-wrap">{}</pre>',
                           tail or "(not reported yet)")

    @admin.display(description="events")
    def timeline(self, execution: Execution) -> str:
        events = execution.events.exclude(type="output").order_by("seq")[:TIMELINE_LIMIT]
        rows = format_html_join(
            "", '<tr class="event-{}"><td>{}</td><td>{}</td><td><strong>{}</strong></td><td>{}</td></tr>',
            ((e.type, e.seq, e.at.strftime("%H:%M:%S.%f")[:-3], e.type, e.message) for e in events),
        )
        return format_html('<table id="execution-timeline"><tr><th>seq</th><th>at</th><th>event</th>'
                           '<th>detail</th></tr>{}</table>', rows)

    @admin.display(description="output")
    def output(self, execution: Execution) -> str:
        lines = execution.events.filter(type="output").order_by("seq")[:TIMELINE_LIMIT]
        text = "\n".join(f"{'! ' if line.stream == 'stderr' else ''}{line.message}" for line in lines)
        return format_html('<pre id="execution-output" style="white-space: pre-wrap">{}</pre>', text or "(none)")

    @admin.action(description="Cancel selected executions", permissions=["cancel"])
    def cancel_executions(self, request, queryset):
        principal = principal_for_user(request.user)
        for execution in queryset:
            try:
                services.execution_cancel(principal=principal, execution=execution)
            except ApiError as error:
                self.message_user(request, f"Execution {execution.pk}: {error.detail}", messages.WARNING)
                continue
            self.log_change(request, execution, "Cancelled")
            self.message_user(request, f"Execution {execution.pk}: cancelled.")
