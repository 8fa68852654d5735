"""Drone fleet: registry, heartbeats, ping/pong, escalation ladder."""
from django.apps import AppConfig


class DronesConfig(AppConfig):
    name = "drones"
    verbose_name = "Drones"
    default_auto_field = "django.db.models.BigAutoField"
