"""Admin of the deployment manager: catalog snapshots and their analyses (with the DAG drawn), profiles and history.

Snapshots, entries, fetches and profile versions are immutable: their pages are read-only
(`ReadOnlyAdmin`). A snapshot's page links each scenario to its analysis page — the DAG as
server-side SVG (`deployments.dag_svg`), requirements, fitness per tier with its explanation and
the swap suggestions; a profile's page has its history with a readable diff per version and its
secrets plan. Every page reads through `deployments.selectors`, scoped like the API
(`TenantScopedAdmin`).
"""
from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from deployments import selectors
from deployments.dag_svg import dag_svg
from deployments.errors import DeploymentError
from deployments.models import CatalogEntry, CatalogFetch, CatalogSnapshot, DeploymentProfile, ProfileVersion
from deployments.tiers import TIERS, parse_tier
from swarm.core.admin_display import ReadOnlyAdmin, ReadOnlyInline
from swarm.core.errors import NotFound
from tenancy.admin import TenantScopedAdmin


class CatalogEntryInline(ReadOnlyInline):
    model = CatalogEntry
    fields = ["key", "version", "path", "valid", "analysis"]
    readonly_fields = fields

    @admin.display(description="analysis")
    def analysis(self, entry):
        if entry.kind != "scenario" or not entry.valid:
            return "—"
        url = reverse("admin:deployments_catalogsnapshot_analysis", args=[entry.snapshot_id, entry.name])
        return format_html('<a href="{}">analyse {}</a>', url, entry.name)

    def get_queryset(self, request):
        return super().get_queryset(request).defer("document")


@admin.register(CatalogSnapshot)
class CatalogSnapshotAdmin(TenantScopedAdmin, ReadOnlyAdmin):
    list_display = ["short_sha256", "source", "origin", "scenario_count", "resource_count", "invalid_count",
                    "created_at"]
    list_filter = ["source"]
    search_fields = ["sha256", "origin"]
    fields = ["sha256", "source", "origin", "scenario_count", "resource_count", "invalid_count", "ignored_files",
              "parser_version", "bundle", "created_at", "created_by", "problem_list"]
    readonly_fields = fields
    inlines = [CatalogEntryInline]

    @admin.display(description="sha256")
    def short_sha256(self, snapshot):
        return f"{snapshot.sha256[:16]}…"

    @admin.display(description="problems")
    def problem_list(self, snapshot):
        if not snapshot.problems:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li><code>{}#{}</code> {}: {} ({})</li>",
            ((p["path"], p["pointer"], p["severity"], p["message"], p["code"]) for p in snapshot.problems)))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [path("<int:snapshot_id>/analysis/<str:scenario>/", wrap(self.analysis_view),
                     name="deployments_catalogsnapshot_analysis"),
                *super().get_urls()]

    def analysis_view(self, request, snapshot_id: int, scenario: str):
        """The analysis of one scenario: the DAG, requirements, fitness per tier with explanations, swaps."""
        snapshot = self.get_queryset(request).filter(pk=snapshot_id).first()
        if snapshot is None:
            raise NotFound(f"No catalog snapshot {snapshot_id}.")
        try:
            tier = parse_tier(request.GET.get("tier") or "desktop")
        except DeploymentError:
            tier = "desktop"
        context = {"snapshot": snapshot, "scenario": scenario, "tier": tier, "tiers": TIERS}
        try:
            analysis = selectors.scenario_analysis(snapshot=snapshot, scenario=scenario)
        except DeploymentError as refusal:
            context["refusal"] = refusal.as_dict()
        else:
            context.update(analysis=analysis, svg=mark_safe(dag_svg(analysis, tier=tier)),  # noqa: S308 - escaped
                           fitness=[(name, analysis["fitness"][name]) for name in TIERS])
        return TemplateResponse(request, "admin/deployments/analysis.html", {
            **self.admin_site.each_context(request), "title": f"{scenario} in snapshot {snapshot.sha256[:12]}…",
            "opts": self.model._meta, **context})


@admin.register(CatalogFetch)
class CatalogFetchAdmin(TenantScopedAdmin, ReadOnlyAdmin):
    list_display = ["git_url", "ref", "state", "snapshot", "error_code", "created_at", "finished_at"]
    list_filter = ["state"]
    readonly_fields = ["tenant", "git_url", "ref", "strict", "state", "commit_sha", "snapshot", "created",
                       "error_code", "error_detail", "problems", "created_at", "finished_at", "created_by"]


class ProfileVersionInline(ReadOnlyInline):
    model = ProfileVersion
    fk_name = "profile"
    fields = ["number", "scenario", "tier", "swaps", "note", "created_by", "created_at"]
    readonly_fields = fields


@admin.register(DeploymentProfile)
class DeploymentProfileAdmin(TenantScopedAdmin, ReadOnlyAdmin):
    list_display = ["slug", "tenant", "scenario", "tier", "version", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["slug", "name"]
    readonly_fields = ["tenant", "slug", "name", "current_version", "created_at", "created_by", "links"]
    inlines = [ProfileVersionInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("tenant", "current_version__snapshot")

    @admin.display(description="scenario")
    def scenario(self, profile):
        return profile.current_version.scenario if profile.current_version else "—"

    @admin.display(description="tier")
    def tier(self, profile):
        return profile.current_version.tier if profile.current_version else "—"

    @admin.display(description="version")
    def version(self, profile):
        return profile.current_version.number if profile.current_version else "—"

    @admin.display(description="pages")
    def links(self, profile):
        history = reverse("admin:deployments_deploymentprofile_history_diffs", args=[profile.pk])
        version = profile.current_version
        analysis = reverse("admin:deployments_catalogsnapshot_analysis", args=[version.snapshot_id, version.scenario])
        return format_html('<a href="{}">history, diffs and secrets plan</a> · <a href="{}?tier={}">analysis</a>',
                           history, analysis, version.tier)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [path("<int:profile_id>/versions/", wrap(self.history_view),
                     name="deployments_deploymentprofile_history_diffs"),
                *super().get_urls()]

    def history_view(self, request, profile_id: int):
        """Every version newest first with what it changed, and the current version's secrets plan."""
        profile = self.get_queryset(request).filter(pk=profile_id).first()
        if profile is None:
            raise NotFound(f"No deployment profile {profile_id}.")
        versions = list(selectors.profile_versions(profile=profile).select_related("profile"))
        history = []
        for newer, older in zip(versions, [*versions[1:], None]):
            changes = selectors.profile_version_diff(older=older, newer=newer)["changes"] if older else []
            history.append({"version": newer, "changes": changes})
        try:
            plan = selectors.profile_secrets_plan(version=versions[0])
        except DeploymentError as refusal:
            plan = {"refusal": refusal.as_dict()}
        return TemplateResponse(request, "admin/deployments/profile_history.html", {
            **self.admin_site.each_context(request), "title": f"Profile {profile.slug}: history and secrets plan",
            "opts": self.model._meta, "profile": profile, "history": history, "plan": plan})
