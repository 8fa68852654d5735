"""What every admin page shares so it reads like a product: times with ages, readable JSON, chips, read-only pages.

* `when(moment)` — `2026-11-27 20:20:14` with its relative age ("3 min ago",
  kept current by static/swarm/live.js), for list columns and fields
  (`timestamp_column(field, description)` makes such a column);
* `json_display(value)` — a flat object as a key/value table, anything else
  pretty-printed; `chips(values)` for lists of labels;
* `ReadOnlyAdmin` — records nobody edits by hand (events, attempts, agent-owned
  rows, immutable history): no Add, no Save, no Delete, only a view page;
* `PrettyJSONFormField` — an editable JSON field shown indented.
"""
from __future__ import annotations

import json
from datetime import datetime

from django import forms
from django.contrib import admin
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

EMPTY = mark_safe('<span class="swarm-muted">—</span>')  # noqa: S308 - constant


def when(moment: datetime | None, *, empty: str = "—"):
    """The time with seconds and how long ago it was (or how far ahead it is)."""
    if moment is None:
        return format_html('<span class="swarm-muted">{}</span>', empty)
    local = timezone.localtime(moment)
    shown = formats.date_format(local, "DATETIME_FORMAT")
    now = timezone.now()
    relative = f"in {timesince(now, moment)}" if moment > now else f"{timesince(moment, now)} ago"
    since = f' data-since="{moment.isoformat()}"' if moment <= now else ""
    return format_html('<time class="swarm-when" datetime="{}">{}</time> <span class="swarm-age"{}>{}</span>',
                       moment.isoformat(), shown, mark_safe(since), relative)  # noqa: S308 - an ISO time we built


def seconds(value: float | None, *, unit: str = "s"):
    """`12.3 s`, or a dash."""
    return EMPTY if value is None else f"{value:.1f} {unit}"


def chips(values) -> str:
    """A list of short strings (labels) as chips."""
    values = [str(value) for value in values or [] if value not in (None, "")]
    if not values:
        return EMPTY
    return format_html_join(" ", '<code class="swarm-chip">{}</code>', ((value,) for value in values))


def _scalar(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


def json_display(value):
    """A flat JSON object as a key/value table; lists of scalars as chips; anything nested pretty-printed."""
    if value in (None, {}, [], ""):
        return EMPTY
    if isinstance(value, dict) and all(not isinstance(item, (dict, list)) for item in value.values()):
        rows = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>',
                                ((key, _scalar(item)) for key, item in value.items()))
        return format_html('<table class="swarm-kv">{}</table>', rows)
    if isinstance(value, list) and all(not isinstance(item, (dict, list)) for item in value):
        return chips(value)
    return format_html('<pre class="swarm-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False,
                                                                       sort_keys=True, default=str))


class PrettyJSONFormField(forms.JSONField):
    """An editable JSON field whose text is indented (Django's renders it on one line)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "swarm-json-input"}))
        super().__init__(*args, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


class _NoEdits:
    """No add, change or delete: what remains is the view permission."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(_NoEdits, admin.ModelAdmin):
    """A record nobody edits by hand: a view page (Close, no Save, no Delete), no Add button.

    Admin actions that do change something (cancel, retry) declare their own
    permission method (`has_<name>_permission`) instead of borrowing "change".
    """


class ReadOnlyInline(_NoEdits, admin.TabularInline):
    """History shown on its parent's page: no rows added, changed or deleted."""

    extra = 0
    max_num = 0
    can_delete = False


def timestamp_column(field: str, description: str, *, empty: str = "—", sortable: bool = True):
    """An admin column or read-only field showing `field` with `when()`: `started = timestamp_column(...)`."""

    def show(model_admin, obj):
        return when(getattr(obj, field), empty=empty)

    show.__name__ = f"{field}_when"
    return admin.display(description=description, ordering=field if sortable else None)(show)


class LiveChangeList(admin.ModelAdmin):
    """A changelist that updates in place: rows and badges follow what `live_topics` announce (swarm/core/live.py).

    The template (`admin/swarm_live_change_list.html`) marks the result table
    and the paginator as live regions; static/swarm/live.js re-reads the page
    when a notice comes and swaps them, keeping the operator's selection.
    """

    live_topics: tuple[str, ...] = ()
    change_list_template = "admin/swarm_live_change_list.html"

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {}, live_topics=",".join(self.live_topics))
        return super().changelist_view(request, extra_context)
