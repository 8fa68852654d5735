"""Drone fleet: registry, heartbeats, ping/pong, escalation ladder."""
from django.apps import AppConfig


class DronesConfig(AppConfig):
    name = "drones"
    verbose_name = "Drones"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from drones import metrics
        from drones.agent_messages import register_handlers

        register_handlers()
        metrics.register_collector()
