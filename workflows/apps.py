"""Workflow registry: tenants, workflows, immutable versions, the active one."""
from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from swarm.core.live import register_live_topic

        register_live_topic(name="executions", permission="workflows.view_execution")
        register_live_topic(name="execution", permission="workflows.view_execution", keyed=True)

        from drones.ws_handlers import register_ws_handler
        from workflows.api.drone_views import handle_execution_claim

        # The drone runtime: a drone claims a queued execution over its WebSocket.
        register_ws_handler("execution_claim", handle_execution_claim)
