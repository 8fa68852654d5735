"""Admin for API tokens (created here and shown once, listed by prefix, revocable) and the audit log."""
from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from swarm.core.choices import TokenScope
from swarm.core.models import ApiToken, AuditLogEntry
from swarm.core.services import api_token_issue, api_token_revoke


class ApiTokenCreateForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["name", "scope", "tenant", "expires_at"]

    def clean_scope(self):
        scope = self.cleaned_data["scope"]
        if scope in (TokenScope.DRONE, TokenScope.EXECUTION):
            raise forms.ValidationError("Drone and execution tokens are issued by registration and spawns.")
        return scope


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["display_prefix", "name", "scope", "tenant", "created_at", "last_used_at", "expires_at", "state"]
    list_filter = ["scope", "tenant", "revoked_at"]
    search_fields = ["name", "prefix"]
    actions = ["revoke_tokens"]
    readonly_fields = ["display_prefix", "subject_type", "subject_id", "created_by", "created_at", "last_used_at",
                       "revoked_at"]

    @admin.display(description="token")
    def display_prefix(self, token: ApiToken) -> str:
        return f"swm_{token.prefix}_…"

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        if token.revoked_at:
            return "revoked"
        if token.expires_at and token.expires_at <= timezone.now():
            return "expired"
        return "active"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return self.readonly_fields + ["name", "scope", "tenant", "expires_at"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, plaintext = api_token_issue(
            scope=form.cleaned_data["scope"], name=form.cleaned_data["name"], tenant=form.cleaned_data["tenant"],
            expires_at=form.cleaned_data["expires_at"], created_by=request.user,
        )
        obj.pk = token.pk
        obj.prefix, obj.digest = token.prefix, token.digest
        messages.warning(request, f"New token (copy it now, it is not shown again): {plaintext}")

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request, queryset):
        for token in queryset:
            api_token_revoke(token=token, actor=f"user:{request.user.get_username()}")
            self.log_change(request, token, "Revoked")
        self.message_user(request, f"Revoked {queryset.count()} token(s).")


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "action", "object_type", "object_id", "tenant"]
    list_filter = ["action", "object_type", "tenant"]
    search_fields = ["actor", "object_id"]
    readonly_fields = [f.name for f in AuditLogEntry._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
