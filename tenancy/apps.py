"""The tenancy app: tenants and the tenant scope every tenant-owned model uses."""
from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "tenancy"
    verbose_name = "Tenancy"
    default_auto_field = "django.db.models.BigAutoField"
