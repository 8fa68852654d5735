"""Drone fleet: registry, heartbeats, ping/pong, escalation ladder."""
from django.apps import AppConfig


class DronesConfig(AppConfig):
    name = "drones"
    verbose_name = "Drones"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from drones import metrics
        from drones.agent_messages import register_handlers
        from drones.payloads import heartbeat as payload_heartbeat
        from drones.payloads import metrics as payload_metrics

        register_handlers()
        metrics.register_collector()
        payload_heartbeat.register()
        payload_metrics.register_collector()
