"""CI: jobs, builds, attempts, logs, artifacts, webhooks."""
from django.apps import AppConfig


class BuildsConfig(AppConfig):
    name = "builds"
    verbose_name = "Builds"
    default_auto_field = "django.db.models.BigAutoField"
