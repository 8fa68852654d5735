"""Cells and buttons the registry pages share: badges, hashes, download links, the Activate button."""
from __future__ import annotations

from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from bundles.downloads import bundle_download_url
from workflows.models import WorkflowVersion


class SwarmAdminMedia:
    """The small stylesheet with badges and buttons used on registry pages."""

    css = {"all": ["swarm/admin.css"]}


def exact_size(size: int) -> str:
    """`4.2 MB (4404019 bytes)`; just `142 bytes` when the short form is already exact."""
    short = filesizeformat(size)
    return short if size < 1024 else f"{short} ({size} bytes)"


def active_badge(is_active: bool) -> str:
    """A green "active" pill, or a dash."""
    if is_active:
        return mark_safe('<span class="swarm-badge swarm-badge-active">active</span>')  # noqa: S308 - constant
    return mark_safe('<span class="swarm-muted">—</span>')  # noqa: S308 - constant


def bundle_hash_cell(sha256: str) -> str:
    """The first 12 hex digits, with the full digest on hover and for copy/paste."""
    return format_html('<code class="swarm-hash" title="{}">{}…</code>', sha256, sha256[:12])


def download_link(version: WorkflowVersion) -> str:
    """A short-lived link to the version's .tar.gz (presigned on S3, signed on local storage)."""
    return format_html('<a href="{}" class="swarm-download">download .tar.gz</a>', bundle_download_url(version.bundle))


def activate_button(version: WorkflowVersion) -> str:
    """An Activate button for an inactive version (nothing for the active one).

    The button submits the surrounding change form (and with it the CSRF
    token) to the workflow's activate view; nested <form>s are not allowed in HTML.
    """
    if version.is_active:
        return ""
    url = reverse("admin:workflows_workflow_activate", args=[version.workflow_id, version.pk])
    return format_html(
        '<button type="submit" class="button swarm-activate" formaction="{}" formmethod="post" formnovalidate '
        'name="activate_version" value="{}" data-version="{}">Activate</button>',
        url, version.pk, version.version,
    )
