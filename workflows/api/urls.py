"""Workflow registry API routes (mounted under /api/v1/)."""
from django.urls import path

from workflows.api import views

urlpatterns = [
    path("bundles", views.BundleUploadView.as_view(), name="bundle-upload"),
    path("tenants", views.TenantListView.as_view(), name="tenant-list"),
    path("tenants/<slug:slug>/workflows", views.TenantWorkflowListView.as_view(), name="tenant-workflows"),
    path("tenants/<slug:slug>/workflows/<slug:workflow_slug>", views.TenantWorkflowDetailView.as_view(),
         name="tenant-workflow-detail"),
    path("workflows/<int:workflow_id>", views.WorkflowDetailView.as_view(), name="workflow-detail"),
    path("workflows/<int:workflow_id>/versions", views.WorkflowVersionListView.as_view(), name="workflow-versions"),
    path("workflows/<int:workflow_id>/active", views.WorkflowActiveView.as_view(), name="workflow-active"),
    path("workflows/<int:workflow_id>/versions/<int:version_id>/activate",
         views.WorkflowVersionActivateView.as_view(), name="workflow-version-activate"),
    path("workflows/<int:workflow_id>/rollback", views.WorkflowRollbackView.as_view(), name="workflow-rollback"),
]
