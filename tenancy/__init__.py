"""Tenancy: the `Tenant` model and the one rule for what a caller may see (`tenancy.scope`)."""
