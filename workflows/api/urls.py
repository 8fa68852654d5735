"""Workflow registry and executions API routes (mounted under /api/v1/).

Resources are viewsets on the router (workflows/api/viewsets.py); the bundle
upload, the execution event report and the metadata service are plain views.
"""
from django.urls import path
from rest_framework.routers import SimpleRouter

from workflows.api import drone_views, execution_views, views, viewsets
from tenancy.api.viewsets import TENANT_PREFIX

router = SimpleRouter(trailing_slash=False)
router.register(rf"{TENANT_PREFIX}/workflows", viewsets.TenantWorkflowViewSet, basename="tenant-workflow")
router.register("workflows", viewsets.WorkflowViewSet, basename="workflow")
router.register("executions", viewsets.ExecutionViewSet, basename="execution")

urlpatterns = [
    path("bundles", views.BundleUploadView.as_view(), name="bundle-upload"),
    # The drone runtime's poll (drone token): before the router, whose executions/<pk> it would meet.
    path("executions/request", drone_views.ExecutionRequestView.as_view(), name="execution-request"),
    # The tail (GET, scoped) and the boot script's report (POST, metadata token) share this URL.
    path("executions/<int:execution_id>/events", execution_views.ExecutionEventsView.as_view(),
         name="execution-events"),
    path("metadata", execution_views.MetadataServiceView.as_view(), name="metadata"),
    path("metadata/events", execution_views.MetadataEventsView.as_view(), name="metadata-events"),
    *router.urls,
]

# The supervisors of local runtimes (issue 15).
from workflows.api import runtime_views  # noqa: E402

urlpatterns += [
    path("executions/<int:execution_id>/runtime-events", runtime_views.ExecutionRuntimeEventsView.as_view(),
         name="execution-runtime-events"),
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
