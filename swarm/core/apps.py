"""Cross-cutting core: API tokens, authentication, errors, audit log, health."""
from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "swarm.core"
    label = "core"
    verbose_name = "Access and audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI authentication extensions with drf-spectacular.
        from swarm.core import schema  # noqa: F401
        # Audits django-axes' admin login lockouts.
        from swarm.core import login_audit  # noqa: F401
