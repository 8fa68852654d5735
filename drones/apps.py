"""Drone fleet: registry, heartbeats, ping/pong, escalation ladder."""
from django.apps import AppConfig


class DronesConfig(AppConfig):
    name = "drones"
    verbose_name = "Drones"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from drones import metrics, sandbox
        from drones.agent_messages import register_handlers
        from drones.payloads import heartbeat as payload_heartbeat
        from drones.payloads import metrics as payload_metrics
        from drones.topology.feed import register_heartbeat_hook
        from swarm.core.live import register_live_topic

        register_handlers()
        metrics.register_collector()
        register_heartbeat_hook()
        payload_heartbeat.register()
        sandbox.register()
        payload_metrics.register_collector()
        register_live_topic(name="drones", permission="drones.view_drone")
        register_live_topic(name="terminal_sessions", permission="drones.view_terminalsession")
