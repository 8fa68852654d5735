"""Enumerations of the workflow registry."""
from django.db import models


class Runtime(models.TextChoices):
    """How the boot script runs a workflow's entrypoint."""

    NODE20 = "node20", "Node.js 20"
    PYTHON311 = "python311", "Python 3.11"
    CUSTOM = "custom", "Custom executable"
