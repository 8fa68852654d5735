"""CI: jobs, builds, attempts, logs, artifacts, webhooks."""
from django.apps import AppConfig


class BuildsConfig(AppConfig):
    name = "builds"
    verbose_name = "Builds"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from builds import metrics
        from builds.heartbeat import register

        metrics.register_collector()
        register()
