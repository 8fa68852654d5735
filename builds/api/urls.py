"""Routes of the builds API under /api/v1/."""
from django.urls import path

from builds.api import views

urlpatterns = [
    path("builds/request", views.BuildRequestView.as_view(), name="build-request"),
    path("builds", views.BuildListView.as_view(), name="build-list"),
    path("builds/<int:build_id>", views.BuildDetailView.as_view(), name="build-detail"),
    path("builds/<int:build_id>/state", views.BuildStateView.as_view(), name="build-state"),
    path("builds/<int:build_id>/log", views.BuildLogView.as_view(), name="build-log"),
    path("builds/<int:build_id>/cancel", views.BuildCancelView.as_view(), name="build-cancel"),
    path("builds/<int:build_id>/retry", views.BuildRetryView.as_view(), name="build-retry"),
    path("builds/<int:build_id>/artifacts", views.BuildArtifactsView.as_view(), name="build-artifacts"),
    path("builds/<int:build_id>/artifacts/<int:artifact_id>/content", views.ArtifactContentView.as_view(),
         name="build-artifact-content"),
    path("builds/<int:build_id>/artifacts/<int:artifact_id>/commit", views.ArtifactCommitView.as_view(),
         name="build-artifact-commit"),
    path("builds/<int:build_id>/artifacts/<int:artifact_id>/download", views.ArtifactDownloadView.as_view(),
         name="build-artifact-download"),
    path("jobs", views.JobListView.as_view(), name="job-list"),
    path("jobs/<str:job_id>", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<str:job_id>/trigger", views.JobTriggerView.as_view(), name="job-trigger"),
    path("queues", views.QueueListView.as_view(), name="queue-list"),
    path("webhooks/<str:provider>", views.WebhookView.as_view(), name="build-webhook"),
]
