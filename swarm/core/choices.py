"""Enumerations shared across the control plane."""
from django.db import models


class TokenScope(models.TextChoices):
    """What a bearer token may do (DESIGN.md §5)."""

    ADMIN = "admin", "admin: everything"
    ENGINE = "engine", "engine: bundles, workflows, executions, builds"
    READ = "read", "read: read-only views"
    DRONE = "drone", "drone: agent endpoints for one drone"
    EXECUTION = "execution", "execution: metadata and events of one execution"
