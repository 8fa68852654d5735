"""Redirects from the tenant admin's old address: tenants were `workflows.Tenant` until the tenancy app."""
from django.urls import re_path
from django.views.generic import RedirectView

admin_redirects = [
    # /admin/workflows/tenant/… (list, add, <pk>/change, <pk>/history, …) → /admin/tenancy/tenant/…
    re_path(r"^admin/workflows/tenant/(?P<rest>.*)$",
            RedirectView.as_view(url="/admin/tenancy/tenant/%(rest)s", permanent=True, query_string=True),
            name="tenant-admin-moved"),
]
