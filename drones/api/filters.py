"""Query parameters of the fleet lists, as django-filter FilterSets (documented in the schema from them)."""
from __future__ import annotations

import django_filters

from drones.models import EscalationEvent
from drones.selectors import drone_get


class EscalationEventFilter(django_filters.FilterSet):
    """`GET /escalation?drone=<name>`: one drone's ladder steps; a drone that does not exist is a 404."""

    drone = django_filters.CharFilter(method="filter_drone", strip=False, help_text="A drone's name.")

    class Meta:
        model = EscalationEvent
        fields = ["drone"]

    def filter_drone(self, queryset, name, value: str):
        return queryset.filter(drone=drone_get(name=value))
