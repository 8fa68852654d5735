"""Operator UI for tenant secrets: the value field is write-only.

A password input that never renders the stored value; left empty on change,
the value is kept. Saves go through `workflows.services.tenant_secret_set`,
which encrypts the value and writes the audit record (naming the secret,
never its value).
"""
from __future__ import annotations

from django import forms
from django.contrib import admin

from swarm.core.principals import principal_for_user
from swarm.core.service_admin import ServiceModelAdmin
from tenancy.admin import TenantScopedAdmin
from workflows import services
from workflows.models import TenantSecret


class TenantSecretForm(forms.ModelForm):
    """The value is write-only: entered, encrypted, never rendered back."""

    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False), required=False, strip=False,
        help_text="Write-only. Leave empty to keep the current value; it is never shown again.",
    )

    class Meta:
        model = TenantSecret
        fields = ["tenant", "name", "value", "workflows"]

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None and not cleaned.get("value"):
            self.add_error("value", "A new secret needs a value.")
        tenant = cleaned.get("tenant") or getattr(self.instance, "tenant", None)
        for workflow in cleaned.get("workflows") or []:
            if tenant is not None and workflow.tenant_id != tenant.pk:
                self.add_error("workflows", f"{workflow} belongs to another tenant.")
        return cleaned


@admin.register(TenantSecret)
class TenantSecretAdmin(TenantScopedAdmin, ServiceModelAdmin):
    form = TenantSecretForm
    list_display = ["name", "tenant", "attached_to", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "tenant__slug"]
    filter_horizontal = ["workflows"]

    def get_readonly_fields(self, request, obj=None):
        return ["tenant", "name"] if obj is not None else []

    @admin.display(description="workflows")
    def attached_to(self, secret: TenantSecret) -> str:
        return ", ".join(workflow.slug for workflow in secret.workflows.all()) or "—"

    def save_model(self, request, obj, form, change):
        secret = services.tenant_secret_set(
            tenant=obj.tenant, name=obj.name, value=form.cleaned_data.get("value") or None,
            workflows=form.cleaned_data.get("workflows"), actor=principal_for_user(request.user),
        )
        obj.pk = secret.pk
        obj.ciphertext = secret.ciphertext

    def save_related(self, request, form, formsets, change):
        """Attachments were set by the service together with the value."""
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)
