"""Template tags for the admin index: the fleet health cards."""
from django import template

from django.conf import settings

from drones.selectors import fleet_health_summary, last_health_sweep

register = template.Library()


@register.inclusion_tag("drones/admin/fleet_cards.html")
def drones_fleet_cards():
    """Healthy / escalating / critical counts, the average ping latency, and the last health sweep."""
    sweep = last_health_sweep()
    late = sweep is None or sweep["age_seconds"] > 3 * settings.SWARM_DRONE_HEALTH_CHECK_INTERVAL + sweep["seconds"]
    return {"fleet": fleet_health_summary(), "sweep": sweep, "sweep_late": late,
            "sweep_interval": settings.SWARM_DRONE_HEALTH_CHECK_INTERVAL}
