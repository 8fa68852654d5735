"""Routes of the builds API under /api/v1/.

Users' resources are viewsets on the router (builds/api/viewsets.py). The
agent protocol, the two URLs a user's read shares with an agent's write
(`/builds/<id>/log`, `/builds/<id>/artifacts`) and the forge webhooks are
plain views, declared first.
"""
from django.urls import path
from rest_framework.routers import SimpleRouter

from builds.api import views, viewsets
from tenancy.api.viewsets import TENANT_PREFIX

router = SimpleRouter(trailing_slash=False)
router.register("jobs", viewsets.JobViewSet, basename="job")
router.register(rf"{TENANT_PREFIX}/jobs", viewsets.TenantJobViewSet, basename="tenant-job")
router.register("builds", viewsets.BuildViewSet, basename="build")
router.register("queues", viewsets.QueueViewSet, basename="queue")

urlpatterns = [
    path("builds/request", views.BuildRequestView.as_view(), name="build-request"),
    path("builds/<int:build_id>/state", views.BuildStateView.as_view(), name="build-state"),
    path("builds/<int:build_id>/log", views.BuildLogView.as_view(), name="build-log"),
    path("builds/<int:build_id>/artifacts", views.BuildArtifactsView.as_view(), name="build-artifacts"),
    path("builds/<int:build_id>/artifacts/<int:artifact_id>/content", views.ArtifactContentView.as_view(),
         name="build-artifact-content"),
    path("builds/<int:build_id>/artifacts/<int:artifact_id>/commit", views.ArtifactCommitView.as_view(),
         name="build-artifact-commit"),
    path("webhooks/<str:provider>", views.WebhookView.as_view(), name="build-webhook"),
    *router.urls,
]
