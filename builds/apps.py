"""CI: jobs, builds, attempts, logs, artifacts, webhooks."""
from django.apps import AppConfig


class BuildsConfig(AppConfig):
    name = "builds"
    verbose_name = "Builds"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from builds import metrics
        from builds.dashboard import running_builds_by_drone
        from builds.heartbeat import register
        from drones.topology.history import register_running_builds_source
        from swarm.core.live import register_live_topic

        metrics.register_collector()
        register()
        register_running_builds_source(running_builds_by_drone)
        register_live_topic(name="builds", permission="builds.view_build")
