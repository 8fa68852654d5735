"""Template tags for the admin index: the fleet health cards."""
from django import template

from drones.selectors import fleet_health_summary

register = template.Library()


@register.inclusion_tag("drones/admin/fleet_cards.html")
def drones_fleet_cards():
    """Healthy / escalating / critical counts and the average ping latency."""
    return {"fleet": fleet_health_summary()}
