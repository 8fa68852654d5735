"""Content-addressed bundle store: blobs, validation, downloads, sweeping."""
from django.apps import AppConfig


class BundlesConfig(AppConfig):
    name = "bundles"
    verbose_name = "Bundle store"
    default_auto_field = "django.db.models.BigAutoField"
