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

# Executions and the metadata service (issue 3).
from workflows.api import execution_views  # noqa: E402

urlpatterns += [
    path("workflows/<int:workflow_id>/executions", execution_views.WorkflowExecutionsView.as_view(),
         name="workflow-executions"),
    path("executions/<int:execution_id>", execution_views.ExecutionDetailView.as_view(), name="execution-detail"),
    path("executions/<int:execution_id>/events", execution_views.ExecutionEventsView.as_view(),
         name="execution-events"),
    path("executions/<int:execution_id>/cancel", execution_views.ExecutionCancelView.as_view(),
         name="execution-cancel"),
    path("metadata", execution_views.MetadataServiceView.as_view(), name="metadata"),
    path("metadata/events", execution_views.MetadataEventsView.as_view(), name="metadata-events"),
]

# Workflow canaries (issue 12): a ViewSet with its verbs as actions.
from workflows.api.canary_views import WorkflowCanaryViewSet  # noqa: E402

urlpatterns += [
    path("workflows/<int:workflow_id>/canary", WorkflowCanaryViewSet.as_view({"get": "retrieve", "post": "create"}),
         name="workflow-canary"),
    path("workflows/<int:workflow_id>/canary/promote", WorkflowCanaryViewSet.as_view({"post": "promote"}),
         name="workflow-canary-promote"),
    path("workflows/<int:workflow_id>/canary/revert", WorkflowCanaryViewSet.as_view({"post": "revert"}),
         name="workflow-canary-revert"),
]
