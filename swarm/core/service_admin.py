"""Admin pages whose saves go through the services: a service's refusal is a form error, not a 500.

A `save_model` that calls a service (so an admin change is validated the
API's way and audited) runs after Django has validated the form, inside the
transaction Django opens around the change view. `ServiceModelAdmin` catches
an `ApiError` raised there: that transaction has rolled back whatever the
service wrote (its audit record too: `audit_record` writes on commit), and
the same form is shown again with the service's sentence on the field it
names (or above the form when it names none).
"""
from __future__ import annotations

from django.contrib import admin
from django.db import models

from swarm.core.errors import ApiError

_REFUSAL = "_swarm_service_refusal"


class ServiceModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose `save_model` calls a service; see the module docstring."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ApiError as refusal:
            if request.method != "POST" or getattr(request, _REFUSAL, None) is not None:
                raise
            setattr(request, _REFUSAL, refusal)
            # The same POST again: the form now fails validation with the refusal, so nothing is saved.
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change, **kwargs)
        refusal = getattr(request, _REFUSAL, None)
        return form_class if refusal is None else _form_refusing(form_class, refusal)


def _form_refusing(form_class, refusal: ApiError):
    """`form_class`, failing validation with the service's refusal."""

    class RefusedForm(form_class):
        def clean(self):
            cleaned = super().clean()
            self.add_error(refusal.field if refusal.field in self.fields else None, refusal.detail)
            return cleaned

    RefusedForm.__name__ = form_class.__name__
    return RefusedForm


def adopt_saved(obj: models.Model, saved: models.Model) -> None:
    """Make the admin's in-memory `obj` the row a service saved, so its log entry, message and redirect name it."""
    for field in saved._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


def form_changes(form, fields=None) -> dict:
    """The fields the operator changed on an admin form, with their cleaned values (only `fields`, when given)."""
    return {name: form.cleaned_data[name] for name in form.changed_data
            if name in form.cleaned_data and (fields is None or name in fields)}
