"""Query parameters of the builds list, as a django-filter FilterSet (documented in the schema from it).

`GET /builds?job=&state=&drone=`:

* `job` — a job's id (ASCII digits that fit a bigint) or its name;
* `state` — one state or a comma-separated list; an unknown state is a 400
  naming the field (`{"error": "invalid", "field": "state"}`);
* `drone` — a drone's id or its name.

Values are taken as sent (no whitespace stripping), and a NUL or control
character never gets here (`swarm.core.inputs.StrictRequestMiddleware`).
"""
from __future__ import annotations

import django_filters
from django import forms

from builds.choices import BuildState
from builds.models import Build
from builds.selectors import is_id


class BuildStatesField(forms.CharField):
    """`pending,running` → `["pending", "running"]`; a state that does not exist is a validation error.

    Absent or empty → None (no filter); `,` → `[]` (no state: nothing matches), as the list said before.
    """

    def __init__(self, **kwargs):
        super().__init__(strip=False, **kwargs)

    def clean(self, value):
        text = super().clean(value)
        if not text:
            return None
        states = [state for state in text.split(",") if state]
        unknown = [state for state in states if state not in BuildState.values]
        if unknown:
            raise forms.ValidationError("unknown state %(state)s; expected one of %(expected)s", code="invalid",
                                        params={"state": repr(unknown[0]), "expected": ", ".join(BuildState.values)})
        return states


class BuildStatesFilter(django_filters.CharFilter):
    """A comma-separated list of build states (`state__in`)."""

    field_class = BuildStatesField

    def filter(self, qs, value):
        return qs if value is None else qs.filter(**{f"{self.field_name}__in": value})


class BuildFilter(django_filters.FilterSet):
    """The filters of `GET /builds`."""

    job = django_filters.CharFilter(method="filter_job", strip=False, help_text="A job's id or name.")
    state = BuildStatesFilter(field_name="state", help_text="A build state, or several separated by commas.")
    drone = django_filters.CharFilter(method="filter_drone", strip=False, help_text="A drone's id or name.")

    class Meta:
        model = Build
        fields = ["job", "state", "drone"]

    def filter_job(self, queryset, name, value: str):
        return queryset.filter(job_id=int(value)) if is_id(value) else queryset.filter(job__name=value)

    def filter_drone(self, queryset, name, value: str):
        return queryset.filter(drone_id=int(value)) if is_id(value) else queryset.filter(drone__name=value)
